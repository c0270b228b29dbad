"""What every figure of the report shares: the Agg backend, atomic saving, log ticks, axis limits, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.core.files import atomic_path, safe_component


class _Pyplot:
    """``matplotlib.pyplot`` on the Agg backend, imported when a figure is first drawn.

    A warm rerun reads every unchanged figure back (``figure_cache``) and draws none: it
    need not import matplotlib (0.4 s of such a run). ``plt.subplots(...)`` and every other
    attribute are pyplot's own.
    """

    _module = None

    def __getattr__(self, name: str):
        if _Pyplot._module is None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot

            _Pyplot._module = matplotlib.pyplot
        return getattr(_Pyplot._module, name)


plt = _Pyplot()

DPI = 100
# The figures of the detailed analyses (fixed point, KL ablation, guides, data size).
DETAIL_DPI = 110
# Matplotlib's default font lacks the subscript letters of the report's text: mathtext instead.
INV_SQRT_H = r"$1/\sqrt{H_{ii}}$"
SQRT_H_INV = r"$\sqrt{(H^{-1})_{ii}}$"

SIGMA_SVI = r"$\sigma_{\mathrm{SVI}}$"


def plain_log_ticks(axis) -> None:
    """Log-axis ticks at 1, 2, 5 times powers of ten, printed as plain numbers (0.02, not 2×10⁻²)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def robust_limits(values: list[np.ndarray], skip: float = 0.05) -> tuple[float, float]:
    """y-limits that show the bulk of each curve after its first ``skip`` of steps.

    The first steps of an optimisation can sit orders of magnitude above the rest;
    clipping them keeps the levelled-off part readable.
    """
    tails = np.concatenate([v[int(len(v) * skip):] for v in values])
    lo, hi = np.quantile(tails, [0.005, 0.995])
    pad = 0.08 * (hi - lo) if hi > lo else max(1.0, abs(hi)) * 0.05
    return float(lo - pad), float(hi + pad)


def save(fig, path: Path, dpi: int = DPI) -> Path:
    """Save atomically (temporary file, then rename) and close the figure.

    The file name goes through ``safe_component``: a figure never lands outside its folder.
    """
    path = Path(path).parent / safe_component(Path(path).name)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=dpi, bbox_inches="tight",
                    metadata={"Software": None})
    plt.close(fig)
    return path


def untrusted_reference(answer_for_model: dict | None) -> bool:
    return bool(answer_for_model and "reference_untrusted" in answer_for_model)
