"""The data-size sweep (sds against N, log-log slopes): figure, answer and table."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.core.results import ModelResult
from study.report.answer import fmt, MAX_NAMED, named_or_counted
from study.report.document import Heading, Image, Paragraph, Table, slug
from study.report.plotting import DETAIL_DPI, plt, save
from study.report.summary import usable_fit, usable_models

# A last-doubling slope above -0.5 + SLOPE_SLACK counts as "not yet at the N^(-1/2) rate".
SLOPE_SLACK = 0.15
SWEEP_STYLE = {
    "svi_meanfield": ("C0", "o", "σ_SVI"),
    "laplace_diag": ("C1", "^", "laplace_diag 1/√Hᵢᵢ"),
    "laplace_full": ("k", "s", "laplace_full √(H⁻¹)ᵢᵢ"),
}


def sweep_figure(model: ModelResult, fig_dir: Path) -> Image | None:
    """Geometric mean over parameters of each sd against N, log-log, with an N^(-1/2) guide line."""
    fit = usable_fit(model, "data_sweep")
    if fit is None:
        return None
    sizes = np.asarray(fit.info["sizes"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for method, (color, marker, label) in SWEEP_STYLE.items():
        sd = np.asarray(fit.info["sd"][method])  # (n_sizes, d)
        geo = np.exp(np.log(sd).mean(1))
        slope = fit.info["slopes"][method]["median"]
        ax.plot(sizes, geo, marker=marker, color=color, lw=1.2, label=f"{label} (median slope {slope:.2f})")
    anchor = np.exp(np.log(np.asarray(fit.info["sd"]["laplace_full"])[-1]).mean())
    ax.plot(sizes, anchor * (sizes / sizes[-1]) ** -0.5, color="0.5", ls="--", lw=1, label="∝ N^(-1/2)")
    ax.set(xscale="log", yscale="log", xlabel="N (observations)", ylabel="geometric mean sd over parameters",
           title=f"{model.title}: data size")
    ax.legend(fontsize=7)
    path = save(fig, dpi=DETAIL_DPI, path=fig_dir / f"data-sweep-{slug(model.name)}.png")
    return Image(path, f"Data-size sweep for {model.name}",
                 "Each method refitted on nested random subsets of the observations; slopes are least-squares "
                 "fits of log sd on log N per parameter (median over parameters).")


def sweep_entries(study, answer: dict) -> list[tuple[ModelResult, dict]]:
    """``(model, answer["models"][name]["data_sweep"])`` for the models with a sweep."""
    out = []
    for model in usable_models(study):
        entry = answer["models"].get(model.name, {}).get("data_sweep")
        if entry:
            out.append((model, entry))
    return out


def sweep_answer(study, answer: dict, fig_dir: Path) -> list:
    rows, images = [], []
    for model, entry in sweep_entries(study, answer):
        rows.append([model.title, ", ".join(str(n) for n in entry["sizes"])]
                    + [f"{fmt(entry['slopes'][m])} ({fmt(entry['slopes_last_doubling'][m])})"
                       for m in ("svi_meanfield", "laplace_diag", "laplace_full")])
        image = sweep_figure(model, fig_dir)
        if image is not None:
            images.append(image)
    if not rows:
        return []
    table = Table(
        columns=["model", "N", "slope σ_SVI", "slope 1/√Hᵢᵢ", "slope √(H⁻¹)ᵢᵢ"],
        rows=rows,
        caption="Median over parameters of the least-squares slope of log sd on log N (in brackets: over the "
        "last doubling only). −0.5 is the large-N rate.",
    )
    text = (
        "Refitted on nested random subsets of the observations (one fixed permutation). Every sd reaches the "
        "N^(−1/2) rate only once the likelihood dominates the prior in every direction."
    )
    slow = [f"{label} on `{model.name}` ({fmt(slope)})"
            for model, entry in sweep_entries(study, answer)
            for method, label in (("svi_meanfield", "σ_SVI"), ("laplace_diag", "1/√Hᵢᵢ"), ("laplace_full", "√(H⁻¹)ᵢᵢ"))
            for slope in [entry["slopes_last_doubling"][method]]
            if slope is not None and slope > -0.5 + SLOPE_SLACK]
    if slow:
        text += (f" Over the last doubling, these still shrink more slowly than N^(−1/2) (slope above "
                 f"{fmt(-0.5 + SLOPE_SLACK)}): {named_or_counted(slow, 'sds')}; where the marginal sd is among them and the "
                 "conditional sds are not, the prior still bounds the directions that correlated parameters "
                 "share.")
    spans = []
    for model in usable_models(study):
        fit = model.fits.get("data_sweep")
        if fit is None or not fit.ok:
            continue
        sd = {m: np.asarray(v) for m, v in fit.info["sd"].items()}
        to_diag = sd["svi_meanfield"] / sd["laplace_diag"]
        to_full = sd["svi_meanfield"] / sd["laplace_full"]
        spans.append(
            f"on `{model.name}`, over every N and parameter, σ_SVI / (1/√Hᵢᵢ) stays within "
            f"{fmt(to_diag.min())}–{fmt(to_diag.max())} while σ_SVI / √(H⁻¹)ᵢᵢ spans {fmt(to_full.min())}–{fmt(to_full.max())}"
        )
    if spans and len(spans) <= MAX_NAMED:
        text += " Measured: " + "; ".join(spans) + "."
    return [Heading(3, "Data size", anchor="data-size"), Paragraph(text), table] + images


def sweep_blocks(model: ModelResult, fig_dir: Path) -> list:
    fit = model.fits.get("data_sweep")
    if fit is None or not fit.ok:
        return []
    sizes = fit.info["sizes"]
    rows = []
    for j, n in enumerate(sizes):
        row = [str(n)]
        for m in ("svi_meanfield", "laplace_diag", "laplace_full"):
            row.append(fmt(np.exp(np.mean(np.log(fit.info["sd"][m][j])))))
        rows.append(row)
    rows.append(["slope"] + [fmt(fit.info["slopes"][m]["median"]) for m in ("svi_meanfield", "laplace_diag", "laplace_full")])
    return [Heading(3, "Data size"),
            Table(columns=["N", "σ_SVI", "1/√Hᵢᵢ", "√(H⁻¹)ᵢᵢ"], rows=rows,
                  caption="Geometric mean over parameters; slope: median over parameters of d log sd / d log N. "
                  "The figure is in the answer section.")]
