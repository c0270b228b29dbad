"""The guide families (mean-field, linear response, low-rank, full-rank) against the reference: figure, answer and table."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.core.results import ModelResult
from study.report.answer import fmt, with_se
from study.report.document import Bullets, Heading, Image, Paragraph, Table, slug
from study.report.plotting import DETAIL_DPI, plt, save
from study.report.summary import ratio_standard_error, sd_ratios, usable_fit, usable_models

GUIDE_STYLE = {
    "svi_meanfield": ("C0", "o", "mean-field σ"),
    "svi_meanfield_lr": ("C4", "D", "mean-field + linear response"),
    "svi_lowrank": ("C1", "^", "low-rank + diagonal"),
    "svi_fullrank": ("C2", "s", "full-rank"),
    "laplace_full": ("k", "x", "Laplace √(H⁻¹)ᵢᵢ"),
}


def guides_figure(model: ModelResult, fig_dir: Path) -> Image | None:
    """sd / reference sd per parameter for mean-field, linear response, low-rank, full-rank and Laplace."""
    ref = model.reference
    fits = {m: usable_fit(model, m) for m in GUIDE_STYLE}
    fits = {m: f for m, f in fits.items() if f is not None}
    if ref is None or len(fits) < 2:
        return None
    d = len(model.param_names)
    fig, ax = plt.subplots(figsize=(min(12.0, 3.0 + 0.28 * d), 3.6))
    index = np.arange(d)
    width = 0.7 / len(fits)
    for k, (method, fit) in enumerate(fits.items()):
        color, marker, label = GUIDE_STYLE[method]
        ax.plot(index + (k - (len(fits) - 1) / 2) * width, np.asarray(fit.sd) / ref.sd, marker, color=color,
                ms=4, ls="none", label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set(xlabel="parameter index", ylabel="sd / reference sd", title=f"{model.title}: guide families")
    if d <= 12:
        ax.set_xticks(index, model.param_names, rotation=45, ha="right", fontsize=7)
    ax.legend(fontsize=7, ncol=3)
    path = save(fig, dpi=DETAIL_DPI, path=fig_dir / f"guides-{slug(model.name)}.png")
    return Image(path, f"Guide families for {model.name}",
                 "Each method's marginal sd over the reference's, per parameter (1 = exact).")


RATIO_COLUMNS = {
    "svi_meanfield": "σ_SVI",
    "svi_meanfield_lr": "linear response",
    "svi_lowrank": "low-rank",
    "svi_fullrank": "full-rank",
    "laplace_full": "√(H⁻¹)ᵢᵢ",
}

GAP_LABELS = {"svi_meanfield_lr": "linear response", "svi_lowrank": "low-rank", "svi_fullrank": "full-rank",
              "laplace_full": "Laplace full"}


def recovery_answer(study, answer: dict) -> list:
    """Per model, each method's median sd / reference sd ± the Monte Carlo SE of that median (as the benchmark's
    tables give it: ``summary.pooled_statistics``), and the share of σ_SVI's gap each closes."""
    from study.report.summary import _pool

    rows, left_out = [], []
    for model in usable_models(study):
        a = answer["models"].get(model.name, {})
        if "svi_over_reference" not in a:
            continue
        gaps = a.get("gap_closed", {})
        gap_text = ", ".join(f"{GAP_LABELS[m]} {fmt(g)}" for m, g in gaps.items()) or "–"
        title = model.title
        if "reference_untrusted" in a:  # shown, but out of the pooled medians (study.summary.study_answer)
            title += " †"
            left_out.append(model.title)
        cells = []
        for method in RATIO_COLUMNS:
            e = _pool([model], method, "reference")
            cells.append("–" if e is None else with_se(e["median"], e.get("median_se"), e.get("se_complete", True)))
        rows.append([title] + cells + [gap_text])
    if not rows:
        return []
    text = (
        "The mean-field σ is the conditional sd; what recovers the marginal sd? The pooled medians over the models "
        "with a trusted reference are the benchmark's table above; per model they are below. The linear-response "
        "correction (Giordano, Broderick & Jordan 2018) reuses the mean-field fit; the low-rank and full-rank "
        "guides are refitted with the same ELBO and schedule, means from the MAP and covariance from the Laplace "
        "approximation."
    )
    table = Table(
        columns=["model"] + [f"{label} / ref sd" for label in RATIO_COLUMNS.values()] + ["share of σ_SVI's gap closed"],
        rows=rows,
        caption="Median over the model's parameters ± the Monte Carlo SE of that median, as in the benchmark's tables "
        "(propagated from each ratio's own error: seeds for σ_SVI, the Hessian draws for linear response, the "
        "reference's Monte Carlo error); \\* marks an SE that leaves out the optimiser noise of a single-seed fit "
        "(low-rank, full-rank) or the mean-field fit's error (linear response). Share of the gap closed: 1 − median "
        "|log(sd/ref)| / median |log(σ_SVI/ref)| (1: exact, 0: no better than mean-field)."
        + (" † Untrusted NUTS reference: shown, left out of the pooled medians." if left_out else ""),
    )
    return [Heading(3, "What recovers the marginal sd?", anchor="recovery"), Paragraph(text), table]


def guides_blocks(model: ModelResult, fig_dir: Path) -> list:
    ref = model.reference
    methods = [m for m in GUIDE_STYLE if m in model.fits and model.fits[m].ok]
    if ref is None or not any(m in methods for m in ("svi_meanfield_lr", "svi_lowrank", "svi_fullrank")):
        return []
    errors = {m: ratio_standard_error(model, m, "reference") for m in methods}
    ratios = {m: sd_ratios(model, m, "reference") for m in methods}
    rows = []
    for k, name in enumerate(model.param_names):
        row = [name]
        for m in methods:
            se, complete = errors[m]
            row.append(with_se(ratios[m][k], None if se is None else se[k], complete))
        rows.append(row)
    columns = ["parameter"] + [f"{GUIDE_STYLE[m][2]} / ref" for m in methods]
    blocks = [Heading(3, "Guide families and linear response"),
              Table(columns=columns, rows=rows, caption="Marginal sd over the reference sd, ± SE (* as in the answer).")]
    extra = []
    lr = model.fits.get("svi_meanfield_lr")
    if lr is not None and lr.ok:
        extra.append(f"Linear response: {lr.info['curvature_draws']} antithetic draws, smallest eigenvalue of "
                     f"−∇²ELBO {fmt(lr.info['min_eigenvalue'])}, μ–log σ block / μ–μ block "
                     f"{fmt(lr.info['cross_block'])} (0 for a Gaussian target).")
    for m in ("svi_lowrank", "svi_fullrank"):
        fit = model.fits.get(m)
        if fit is not None and fit.ok:
            i = fit.info
            gain = i.get("elbo_minus_laplace")
            versus = "" if gain is None else (
                f"; ELBO − Laplace's ELBO (same draws) {fmt(gain)} ± {fmt(i['elbo_minus_laplace_se'])}"
                + (" — below Laplace, which this family contains: not converged"
                   if m == "svi_fullrank" and gain < -3 * i["elbo_minus_laplace_se"] else "")
            )
            extra.append(f"`{m}`: rank {i['rank']}, {i['steps']} steps, means from the {i['init']}, covariance from "
                         f"{i.get('covariance_init', '?')}, averaged over the last {i['averaged_over_last_steps']}; "
                         f"sd drift {fmt(i['sigma_drift'])}; ELBO {fmt(i['final_elbo'], 6)} ± "
                         f"{fmt(i['final_elbo_se'])}{versus}; {fmt(i['wall_seconds'])} s.")
    if extra:
        blocks.append(Bullets(extra))
    image = guides_figure(model, fig_dir)
    return blocks + ([image] if image is not None else [])
