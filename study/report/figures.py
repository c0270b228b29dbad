"""Figures of the report (matplotlib and ArviZ, PNG), written next to it.

Per model: the collapse curve, σ against curvature, every method's intervals.
Across models: one summary of σ_SVI / reference sd and σ_SVI / (1/√Hᵢᵢ).

``MODEL_FIGURES`` and ``ANSWER_FIGURES`` list the figure functions that
``make_all`` calls, in report order; a new figure is one more entry there.
A model figure is ``f(model, answer_for_model, fig_dir) -> Image | list[Image] | None``,
an answer figure ``f(study, answer, fig_dir) -> Image | list[Image] | None``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study.report.answer import fmt  # noqa: E402
from study.report.document import Image, slug  # noqa: E402
from study.methods import METHODS  # noqa: E402
from study.core.results import OK, ModelResult  # noqa: E402
from study.core.results import StudyResult  # noqa: E402
from study.report.summary import BAND, SVI, sd_ratios  # noqa: E402

DPI = 100
# Up to this many parameters the collapse curve draws one line per parameter;
# above it, the median and the range over parameters.
PER_PARAMETER_LINES = 6
# The forest plot puts at most this many parameters in one column of panels.
FOREST_PARAMETERS_PER_COLUMN = 16
# The σ-versus-curvature scatter labels at most this many points: those farthest from y = x.
LABELLED_OUTLIERS = 4

# Matplotlib's default font lacks the subscript letters of the report's text: mathtext instead.
INV_SQRT_H = r"$1/\sqrt{H_{ii}}$"
SQRT_H_INV = r"$\sqrt{(H^{-1})_{ii}}$"
SIGMA_SVI = r"$\sigma_{\mathrm{SVI}}$"
COMPARISON_STYLE = {
    "laplace_diag": (f"{INV_SQRT_H} (laplace_diag)", "C0", "o"),
    "laplace_full": (f"{SQRT_H_INV} (laplace_full)", "C1", "s"),
    "reference": ("reference sd", "C2", "^"),
}


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


def save(fig, path: Path) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    from study.core.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=DPI, bbox_inches="tight",
                    metadata={"Software": None})
    plt.close(fig)
    return path


def _ok(model: ModelResult, method: str):
    fit = model.fits.get(method)
    return fit if fit is not None and fit.ok else None


def untrusted_reference(answer_for_model: dict | None) -> bool:
    return bool(answer_for_model and "reference_untrusted" in answer_for_model)


# -- per model ----------------------------------------------------------------------------------


def collapse_curve(model: ModelResult, answer_for_model: dict, fig_dir: Path) -> Image | None:
    """Loss and log σ against step for the full ELBO and the expected loss, on shared axes.

    The ELBO's σ should level off at 1/√Hᵢᵢ (dashed: the mean-field optimum of a
    Gaussian posterior, hence the analytic value for the conjugate models); the
    expected loss's σ keeps falling.
    """
    svi, collapse = _ok(model, SVI), _ok(model, "expected_loss")
    if svi is None or collapse is None or svi.trajectory is None or collapse.trajectory is None:
        return None
    diag = _ok(model, "laplace_diag")
    d = len(model.param_names)
    per_parameter = d <= PER_PARAMETER_LINES
    fig, (ax_loss, ax_sigma) = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True)
    losses = []
    for fit, label, colour in ((svi, "full ELBO", "C0"), (collapse, "expected loss only", "C3")):
        t = fit.trajectory
        losses.append(np.asarray(t["loss"], dtype=float))
        ax_loss.plot(t["step"], t["loss"], color=colour, lw=1)
        log_sigma = np.asarray(t["log_sigma"])
        if per_parameter:
            for i in range(d):
                ax_sigma.plot(t["step"], log_sigma[:, i], color=colour, lw=1.3, alpha=0.85,
                              label=label if i == 0 else None)
        else:
            ax_sigma.plot(t["step"], np.median(log_sigma, axis=1), color=colour, lw=1.5, label=f"{label}: median")
            ax_sigma.fill_between(t["step"], log_sigma.min(1), log_sigma.max(1), color=colour, alpha=0.15,
                                  lw=0, label=f"{label}: range over the {d} parameters")
    if diag is not None:
        target = np.log(np.asarray(diag.sd))
        if per_parameter:
            for i, value in enumerate(target):
                ax_sigma.axhline(value, color="k", ls="--", lw=0.9,
                                 label=f"log {INV_SQRT_H} at the MAP (ELBO optimum if Gaussian)" if i == 0 else None)
        else:
            ax_sigma.axhline(np.median(target), color="k", ls="--", lw=1,
                             label=f"median log {INV_SQRT_H} at the MAP (ELBO optimum if Gaussian)")
    ax_loss.set_ylim(*robust_limits(losses))
    ax_loss.set(xlabel="step", ylabel="loss (negative objective)", title="objective")
    ax_sigma.set(xlabel="step", ylabel="log σ", title="log σ" + ("" if per_parameter else " (median, range)"))
    handles, labels = ax_sigma.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(model.title, fontsize=10)
    fig.tight_layout()
    path = save(fig, fig_dir / f"collapse-{slug(model.name)}.png")
    text = ("one line per parameter" if per_parameter else f"median and range over the {d} parameters")
    return Image(
        path, f"Collapse curve for {model.name}",
        f"Loss and log σ against step ({text}). Blue: the full ELBO, whose σ levels off near the dashed "
        "1/√Hᵢᵢ; red: the expected loss alone (no prior, no entropy), whose σ keeps falling. The loss axis "
        "leaves out the first steps' transient.",
    )


def sigma_vs_curvature(model: ModelResult, answer_for_model: dict, fig_dir: Path) -> Image | None:
    """Log–log scatter of σ_SVI against 1/√Hᵢᵢ, √(H⁻¹)ᵢᵢ and the reference sd, with y = x."""
    svi = _ok(model, SVI)
    if svi is None:
        return None
    y = np.asarray(svi.sd)
    untrusted = untrusted_reference(answer_for_model)
    fig, ax = plt.subplots(figsize=(6, 5.4))
    worst: dict[str, tuple[float, float, float]] = {}  # parameter -> (|log y/x|, x, y) of its worst comparison
    lo, hi = y.min(), y.max()
    drawn = 0
    for method, (label, colour, marker) in COMPARISON_STYLE.items():
        fit = _ok(model, method)
        if fit is None:
            continue
        x = np.asarray(fit.sd)
        hollow = method == "reference" and untrusted
        ax.scatter(x, y, s=28, marker=marker, alpha=0.8, label=label + (" (untrusted NUTS)" if hollow else ""),
                   facecolors="none" if hollow else colour, edgecolors=colour, linewidths=1.2, zorder=3)
        lo, hi = min(lo, x.min()), max(hi, x.max())
        drawn += 1
        for name, xi, yi in zip(model.param_names, x, y):
            distance = abs(np.log(yi / xi))
            if distance > worst.get(name, (-1.0,))[0]:
                worst[name] = (distance, xi, yi)
    if drawn == 0:
        plt.close(fig)
        return None
    fixed = svi.info.get("fixed_point") or {}
    expected = np.asarray(fixed.get("expected_hessian") or [], dtype=float)
    if expected.shape == y.shape and np.all(expected > 0):
        # The fixed-point check (study.checks.fixed_point): sigma_i^-2 = E_q[H_ii] puts these on y = x.
        x = 1.0 / np.sqrt(expected)
        ax.scatter(x, y, s=22, marker="D", color="C3", alpha=0.9, zorder=4,
                   label=r"$1/\sqrt{E_q[H_{ii}]}$ (fixed point)")
        lo, hi = min(lo, x.min()), max(hi, x.max())
    else:
        fixed = {}
    pad = 1.6
    lims = (lo / pad, hi * pad)
    ax.plot(lims, lims, color="k", lw=1, ls="--", label="y = x")
    ax.fill_between(lims, np.array(lims) / BAND, np.array(lims) * BAND, color="0.85", alpha=0.5, lw=0,
                    label=f"within {round(100 * (BAND - 1))}%")
    ax.set(xscale="log", yscale="log", xlim=lims, ylim=lims, aspect="equal",
           xlabel="compared sd", ylabel=f"{SIGMA_SVI} (mean-field)", title=model.title)
    for axis in (ax.xaxis, ax.yaxis):
        plain_log_ticks(axis)
    labelled = sorted(((v, k) for k, v in worst.items() if v[0] > np.log(BAND)), reverse=True)[:LABELLED_OUTLIERS]
    for k, ((_, xi, yi), name) in enumerate(labelled):
        # Outliers often sit together: fan the labels out below their points, joined by a thin line.
        right = np.log(xi / lims[0]) > 0.6 * np.log(lims[1] / lims[0])  # near the right edge: label leftwards
        ax.annotate(name, (xi, yi), xytext=(-14 if right else 14, -12 - 13 * k), textcoords="offset points",
                    ha="right" if right else "left", fontsize=7.5,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4"),
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax.legend(fontsize=8, loc="upper left")
    path = save(fig, fig_dir / f"sigma-curvature-{slug(model.name)}.png")
    caption = ("σ_SVI against other sds, one marker per parameter and comparison. On the line y = x σ equals "
               f"the compared sd; the grey band is the within-{round(100 * (BAND - 1))}% zone.")
    if fixed.get("r"):
        r = np.abs(np.asarray(fixed["r"], dtype=float))
        caption += (f" Red diamonds: 1/√E_q[Hᵢᵢ], the curvature averaged over q, on which the mean-field fixed "
                    f"point puts σ exactly (largest |rᵢ| = |σᵢ²E_q[Hᵢᵢ] − 1| here: {r.max():.3g}).")
    if labelled:
        caption += (f" Labelled: the {len(labelled)} parameter{'s' if len(labelled) > 1 else ''} farthest "
                    "from y = x, at their worst comparison.")
    if untrusted:
        caption += " Hollow: the NUTS reference failed its mixing checks and is not trusted."
    return Image(path, f"σ against curvature for {model.name}", caption)


def _forest_data(model: ModelResult):
    """``(methods, [InferenceData])``: one per method with draws, one scalar variable per parameter."""
    import arviz as az

    methods, datasets = [], []
    for method in list(METHODS) + [m for m in model.fits if m not in METHODS]:
        fit = _ok(model, method)
        if fit is None or fit.draws is None:
            continue
        draws = np.asarray(fit.draws)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets.append(az.from_dict(posterior={name: draws[..., i] for i, name in enumerate(model.param_names)}))
        methods.append(method)
    return methods, datasets


def method_intervals(model: ModelResult, answer_for_model: dict, fig_dir: Path) -> Image | None:
    """``az.plot_forest`` of every method's 94% HDI, parameters down the page.

    The draws are those of the ``InferenceData`` saved in ``idata/<model>/<method>.nc``,
    one variable per parameter so that a model with many parameters can be laid out in
    several columns of at most ``FOREST_PARAMETERS_PER_COLUMN`` parameters each.
    """
    import arviz as az

    methods, datasets = _forest_data(model)
    if not methods:
        return None
    names = model.param_names
    columns = int(np.ceil(len(names) / FOREST_PARAMETERS_PER_COLUMN))
    per_column = int(np.ceil(len(names) / columns))
    chunks = [names[i:i + per_column] for i in range(0, len(names), per_column)]
    rows = per_column * len(methods)
    height = 1.6 + 0.085 * rows + 0.2 * per_column
    fig, axes = plt.subplots(1, columns, figsize=(4.8 * columns, height), squeeze=False, sharex=True)
    handles, labels = [], []
    for ax, chunk in zip(axes[0], chunks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # legend=True keeps ArviZ from repeating the method in every row label.
            az.plot_forest(datasets, model_names=methods, var_names=chunk, combined=True, hdi_prob=0.94,
                           ax=ax, textsize=8, markersize=3, linewidth=1.2, legend=True)
        legend = ax.get_legend()
        if legend is not None:
            handles, labels = list(legend.legend_handles), [t.get_text() for t in legend.get_texts()]
            legend.remove()
        ax.set_title("")
    # ArviZ lists the methods bottom-up; the legend reads in the rows' top-down order.
    order = {m: i for i, m in enumerate(methods)}
    pairs = sorted(zip(handles, labels), key=lambda p: order.get(p[1], 0))
    legend_rows = int(np.ceil(len(methods) / 4))
    head = 0.3 + 0.2 * legend_rows  # inches above the panels: title and legend
    fig.suptitle(f"{model.title}: 94% HDI per method", fontsize=10, y=1 - 0.05 / height, va="top")
    fig.legend([h for h, _ in pairs], [lab for _, lab in pairs], loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.3 / height), ncol=min(4, len(methods)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - head / height))
    path = save(fig, fig_dir / f"intervals-{slug(model.name)}.png")
    caption = (f"az.plot_forest: every method's 94% highest-density interval and median, for each of the "
               f"{len(names)} parameters")
    if columns > 1:
        caption += f", in {columns} columns"
    caption += " (unconstrained coordinates). The expected-loss intervals have collapsed to points."
    return Image(path, f"Method intervals for {model.name}", caption)


# -- across models --------------------------------------------------------------------------------


def across_models(study: StudyResult, answer: dict, fig_dir: Path) -> Image | None:
    """Per model, the spread of σ_SVI / reference sd and σ_SVI / (1/√Hᵢᵢ): box and strip plot, log axis."""
    rows = []
    for model in study.models:
        if model.status != OK:
            continue
        diag = sd_ratios(model, SVI, "laplace_diag")
        ref = sd_ratios(model, SVI, "reference")
        if diag is None and ref is None:
            continue
        rows.append((model, diag, ref, untrusted_reference(answer["models"].get(model.name))))
    if not rows:
        return None
    rng = np.random.default_rng(0)  # jitter only: where a dot sits within its strip
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.75 * len(rows)))
    series = ((f"{SIGMA_SVI} / {INV_SQRT_H}", "C0", -0.18, 1), (f"{SIGMA_SVI} / reference sd", "C2", 0.18, 2))
    for k, (model, diag, ref, untrusted) in enumerate(rows):
        y0 = len(rows) - 1 - k
        for (label, colour, offset, which) in series:
            values = diag if which == 1 else ref
            if values is None:
                continue
            hollow = which == 2 and untrusted
            ax.boxplot(values, positions=[y0 + offset], widths=0.28, vert=False, showfliers=False,
                       manage_ticks=False, patch_artist=True,
                       boxprops=dict(facecolor="none", edgecolor=colour), medianprops=dict(color=colour, lw=2),
                       whiskerprops=dict(color=colour), capprops=dict(color=colour))
            jitter = rng.uniform(-0.1, 0.1, size=len(values))
            ax.scatter(values, y0 + offset + jitter, s=12, alpha=0.7, edgecolors=colour,
                       facecolors="none" if hollow else colour, linewidths=0.8, zorder=3)
    ax.axvline(1.0, color="k", lw=1)
    ax.axvspan(1 / BAND, BAND, color="0.88", zorder=0)
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([m.title + ("\n(reference untrusted)" if u else "") for m, _, _, u in reversed(rows)],
                       fontsize=8.5)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=label) for label, c, _, _ in series]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="0.88", label=f"within {round(100 * (BAND - 1))}% of 1"))
    ax.legend(handles=handles, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False)
    ax.set_xlabel("ratio of sds (log scale); one dot per parameter, box: quartiles")
    ax.grid(axis="x", which="major", color="0.9")
    path = save(fig, fig_dir / "across-models.png")
    caption = ("Per model, σ_SVI over 1/√Hᵢᵢ at the MAP (blue) and over the reference marginal sd (green), "
               "one dot per parameter; the line marks 1.")
    if any(u for *_, u in rows):
        caption += " Hollow green dots: an untrusted NUTS reference, left out of the pooled numbers."
    return Image(path, "σ_SVI relative to 1/√Hᵢᵢ and to the reference sd, per model", caption)


MODEL_FIGURES: list[Callable[[ModelResult, dict, Path], Image | list[Image] | None]] = [
    collapse_curve,
    sigma_vs_curvature,
    method_intervals,
]
ANSWER_FIGURES: list[Callable[[StudyResult, dict, Path], Image | list[Image] | None]] = [across_models]


def _images(result) -> list[Image]:
    if result is None:
        return []
    return [result] if isinstance(result, Image) else [im for im in result if im is not None]


def make_all(
    study: StudyResult,
    answer: dict,
    fig_dir: Path,
    model_figures: list[Callable] | None = None,
    answer_figures: list[Callable] | None = None,
) -> tuple[dict[str, list[Image]], list[Image]]:
    """Every figure; returns per-model figures (by model name) and the across-models figures.

    ``model_figures`` / ``answer_figures`` default to ``MODEL_FIGURES`` / ``ANSWER_FIGURES``.
    """
    fig_dir = Path(fig_dir)
    per_model: dict[str, list[Image]] = {}
    for model in study.models:
        if model.status != OK:
            continue
        a = answer["models"].get(model.name, {})
        per_model[model.name] = [im for make in (model_figures or MODEL_FIGURES) for im in _images(make(model, a, fig_dir))]
    across = [im for make in (answer_figures or ANSWER_FIGURES) for im in _images(make(study, answer, fig_dir))]
    return per_model, across
