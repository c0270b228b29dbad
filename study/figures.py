"""Figures of the report (matplotlib, PNG), written next to it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .document import Image, slug  # noqa: E402
from .results import OK, ModelResult  # noqa: E402
from .runner import StudyResult  # noqa: E402

DPI = 110


def save(fig, path: Path) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    from .outputs import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=DPI, bbox_inches="tight",
                    metadata={"Software": None})
    plt.close(fig)
    return path


def collapse_curve(model: ModelResult, fig_dir: Path) -> Image | None:
    """Loss and log σ against step: the ELBO's σ plateaus, the expected loss's σ falls."""
    svi, collapse = model.fits.get("svi_meanfield"), model.fits.get("expected_loss")
    if svi is None or collapse is None or not svi.ok or not collapse.ok:
        return None
    fig, (ax_loss, ax_sigma) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for fit, label, colour in ((svi, "full ELBO", "C0"), (collapse, "expected loss only", "C3")):
        t = fit.trajectory
        ax_loss.plot(t["step"], t["loss"], color=colour, lw=1, label=label)
        ax_sigma.plot(t["step"], np.median(t["log_sigma"], axis=1), color=colour, lw=1.5, label=f"{label}: median log σ")
        ax_sigma.fill_between(t["step"], t["log_sigma"].min(1), t["log_sigma"].max(1), color=colour, alpha=0.15, lw=0)
    diag = model.fits.get("laplace_diag")
    if diag is not None and diag.ok:
        ax_sigma.axhline(np.median(np.log(diag.sd)), color="k", ls="--", lw=1, label="median log 1/√Hᵢᵢ (MAP)")
    ax_loss.set_yscale("symlog")
    ax_loss.set(xlabel="step", ylabel="loss (negative objective)", title="objective")
    ax_sigma.set(xlabel="step", ylabel="log σ (band: all parameters)", title="log σ")
    ax_loss.legend(fontsize=8)
    ax_sigma.legend(fontsize=8)
    fig.suptitle(model.title, fontsize=10)
    path = save(fig, fig_dir / f"collapse-{slug(model.name)}.png")
    return Image(path, f"Collapse curve for {model.name}", "Loss and log σ against step for the full ELBO and the expected loss.")


def make_all(study: StudyResult, answer: dict, fig_dir: Path) -> tuple[dict[str, list[Image]], list[Image]]:
    """Every figure; returns per-model figures and the across-models figures."""
    per_model: dict[str, list[Image]] = {}
    for model in study.models:
        if model.status != OK:
            continue
        images = [collapse_curve(model, fig_dir)]
        per_model[model.name] = [im for im in images if im is not None]
    return per_model, []
