"""Report blocks for the fixed-point check, the KL ablation, the guide families and the data-size sweep.

``answer_blocks(study, answer, fig_dir)`` goes into the answer section,
``model_blocks(model, fig_dir)`` into each model's section. Both return
``study.report.document`` blocks, write their figures into ``fig_dir`` and are
functions of the results only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.report import analysis_figures as figures
from study.report.answer import fmt, ratio_cell, with_se
from study.report.document import Bullets, Heading, Paragraph, Table
from study.checks.fixed_point import Z_LIMIT
from study.core.results import OK, ModelResult
from study.report.summary import SVI, ratio_standard_error, sd_ratios

RATIO_COLUMNS = {
    "svi_over_reference": "σ_SVI",
    "lr_over_reference": "linear response",
    "lowrank_over_reference": "low-rank",
    "fullrank_over_reference": "full-rank",
    "laplace_full_over_reference": "√(H⁻¹)ᵢᵢ",
}
GAP_LABELS = {"svi_meanfield_lr": "linear response", "svi_lowrank": "low-rank", "svi_fullrank": "full-rank",
              "laplace_full": "Laplace full"}


def _ok_models(study) -> list[ModelResult]:
    return [m for m in study.models if m.status == OK]


# -- the answer --------------------------------------------------------------------------------


def fixed_point_answer(study, answer: dict) -> list:
    rows, verdicts = [], {}
    for model in _ok_models(study):
        entry = answer["models"].get(model.name, {}).get("fixed_point")
        if not entry:
            continue
        verdicts[model.name] = entry["verdict"]
        rows.append([
            model.title, str(entry["seeds"]), fmt(entry["sd_rel_se"]), fmt(entry["max_abs_r"]),
            fmt(entry["max_abs_z"]), f"{entry['n_off']} / {entry['n']}", entry["verdict"],
        ])
    if not rows:
        return []
    held = [m for m, v in verdicts.items() if v == "fixed point"]
    short = [m for m, v in verdicts.items() if v == "not converged"]
    wrong = [m for m, v in verdicts.items() if v == "model"]
    text = (
        "At a converged mean-field optimum every rᵢ = σᵢ²·E_q[Hᵢᵢ] − 1 is 0 (Opper & Archambeau 2009), "
        "Hᵢᵢ being the exact Hessian diagonal of −log p in unconstrained space, averaged over q by Monte Carlo "
        f"(antithetic draws). Measured: the fixed point holds (every |rᵢ| within {Z_LIMIT:g} SE) on "
        f"{len(held)} of {len(verdicts)} models"
    )
    if short:
        text += f"; on {', '.join(f'`{m}`' for m in short)} σ stopped short of it (optimisation)"
    if wrong:
        text += f"; on {', '.join(f'`{m}`' for m in wrong)} the residual is large with σ settled (the model as the ELBO sees it)"
    text += ". Each model's section names the parameters and the likelier cause."
    table = Table(
        columns=["model", "seeds", "relative SE of σ", "max |rᵢ|", "max |rᵢ|/SEᵢ", "beyond 3 SE", "verdict"],
        rows=rows,
        caption="SE of r: the Hessian draws and the seed-to-seed error of σ, by the delta method.",
    )
    return [Heading(3, "Is σ at the mean-field fixed point?", anchor="fixed-point"), Paragraph(text), table]


def ablation_answer(study, answer: dict) -> list:
    rows, outcomes = [], {}
    for model in _ok_models(study):
        entry = answer["models"].get(model.name, {}).get("kl_ablation")
        fit = model.fits.get("kl_ablation")
        if not entry or fit is None:
            continue
        outcomes[model.name] = entry["outcome"]
        for arm, a in fit.info["arms"].items():
            rows.append([
                model.title, a["label"], "on" if a["include_prior"] else "off", "on" if a["include_entropy"] else "off",
                fmt(a.get("median_final_over_full")), fmt(a["median_log_sigma_slope_per_1000_steps"]),
                a.get("verdict", "–"),
            ])
    if not rows:
        return []
    names = ", ".join(f"`{m}`" for m in outcomes)
    if all(o == "entropy anchors sigma" for o in outcomes.values()):
        text = (
            f"Measured on {names}: both runs without the entropy term collapsed (σ far below the full ELBO's and "
            "still falling) and both runs with it did not, with or without the prior. **The entropy term anchors "
            "σ, not the prior**: the prior's pull on σ, σ/s₀², points down like the likelihood's σ·E_q[Hᵢᵢ]; "
            "only the entropy's −1/σ pushes up."
        )
    elif all(o == "prior anchors sigma" for o in outcomes.values()):
        text = f"Measured on {names}: the prior alone kept σ from collapsing."
    else:
        text = (
            f"Measured on {names}: the outcome is not the clean pattern on every model "
            f"({', '.join(f'{m}: {o}' for m, o in outcomes.items())}); see the table."
        )
    table = Table(
        columns=["model", "arm", "prior", "entropy", "final σ / full-arm σ (median)", "log σ slope /1000 steps",
                 "verdict"],
        rows=rows,
        caption="Same guide, optimiser, constant learning rate, steps and noise draws in every arm. Collapsed: "
        "every σ below 0.1 of the full arm's and still falling faster than 0.5 per 1000 steps; stable: every σ "
        "within a factor 2 of it, trend below 0.1 per 1000 steps.",
    )
    return [Heading(3, "Which term of the KL stops the collapse?", anchor="kl-ablation"), Paragraph(text), table]


def recovery_answer(study, answer: dict) -> list:
    rows, left_out = [], []
    for model in _ok_models(study):
        a = answer["models"].get(model.name, {})
        if "svi_over_reference" not in a:
            continue
        gaps = a.get("gap_closed", {})
        gap_text = ", ".join(f"{GAP_LABELS[m]} {fmt(g)}" for m, g in gaps.items()) or "–"
        title = model.title
        if "reference_untrusted" in a:  # shown, but out of the pooled medians (study.summary.study_answer)
            title += " †"
            left_out.append(model.title)
        rows.append([title] + [ratio_cell(a.get(key)) for key in RATIO_COLUMNS] + [gap_text])
    if not rows:
        return []
    pooled = answer["pooled"]
    parts = []
    for key, label in RATIO_COLUMNS.items():
        entry = pooled.get(key)
        if entry:
            parts.append(f"{label} {with_se(entry['median'], entry.get('median_se'), entry.get('se_complete', True))}")
    text = (
        "The mean-field σ is the conditional sd; what recovers the marginal sd? Median of sd / reference sd "
        "over every parameter of " + ("the models with a trusted reference" if left_out else "every model") + ": " + "; ".join(parts) + ". The linear-response correction (Giordano, Broderick & "
        "Jordan 2018) reuses the mean-field fit; the low-rank and full-rank guides are refitted with the same "
        "ELBO and schedule, means from the MAP and covariance from the Laplace approximation."
    )
    table = Table(
        columns=["model"] + [f"{label} / ref sd" for label in RATIO_COLUMNS.values()] + ["share of σ_SVI's gap closed"],
        rows=rows,
        caption="Median over parameters ± its typical SE (worst parameter ± SE in brackets). SE: seeds for σ_SVI, "
        "the Hessian draws for linear response, the reference's Monte Carlo error (ArviZ mcse of the sd) "
        "throughout; * marks an SE that leaves out the optimiser noise of a single-seed fit (low-rank, full-rank) "
        "or the mean-field fit's error (linear response). Share of the gap closed: 1 − median |log(sd/ref)| / "
        "median |log(σ_SVI/ref)| (1: exact, 0: no better than mean-field)."
        + (" † Untrusted NUTS reference: shown, left out of the pooled medians." if left_out else ""),
    )
    return [Heading(3, "What recovers the marginal sd?", anchor="recovery"), Paragraph(text), table]


# A last-doubling slope above -0.5 + SLOPE_SLACK counts as "not yet at the N^(-1/2) rate".
SLOPE_SLACK = 0.15


def sweep_entries(study, answer: dict) -> list[tuple[ModelResult, dict]]:
    """``(model, answer["models"][name]["data_sweep"])`` for the models with a sweep."""
    out = []
    for model in _ok_models(study):
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
        image = figures.sweep_figure(model, fig_dir)
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
                 f"{fmt(-0.5 + SLOPE_SLACK)}): {', '.join(slow)}; where the marginal sd is among them and the "
                 "conditional sds are not, the prior still bounds the directions that correlated parameters "
                 "share.")
    spans = []
    for model in _ok_models(study):
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
    if spans:
        text += " Measured: " + "; ".join(spans) + "."
    return [Heading(3, "Data size", anchor="data-size"), Paragraph(text), table] + images


def answer_blocks(study, answer: dict, fig_dir: Path) -> list:
    """Blocks for the answer section: fixed point, KL ablation, recovery of the marginal sd, data size."""
    fig_dir = Path(fig_dir)
    return (fixed_point_answer(study, answer) + ablation_answer(study, answer) + recovery_answer(study, answer)
            + sweep_answer(study, answer, fig_dir))


# -- one model ----------------------------------------------------------------------------------


def fixed_point_blocks(model: ModelResult, fig_dir: Path) -> list:
    fit = model.fits.get(SVI)
    if fit is None or not fit.ok or "fixed_point" not in fit.info:
        return []
    fixed = fit.info["fixed_point"]
    blocks: list = [Heading(3, "Fixed point σᵢ⁻² = E_q[Hᵢᵢ]")]
    if "error" in fixed:
        return blocks + [Paragraph(f"Not checked: {fixed['error']}")]
    i = fit.info
    seeds = (f"σ is the mean of {i['seeds']} seeds (relative SE {fmt(i['sd_rel_se'])}, pooled over parameters; "
             f"largest seed-to-seed spread of a mean: {fmt(i['mean_spread_over_sigma'])} σ)" if i.get("seeds", 1) > 1
             else "one seed: the SE covers the Hessian draws only")
    blocks.append(Paragraph(
        f"{fixed['draws']} antithetic draws from q; {seeds}. Diagnosis: {fixed['diagnosis']['text']}"
    ))
    sd_se = i.get("sd_se") or [None] * len(fit.sd)
    expected = np.asarray(fixed["expected_hessian"])
    rows = [
        [name, with_se(fit.sd[k], sd_se[k]), fmt(1.0 / np.sqrt(expected[k])), with_se(fixed["r"][k], fixed["se"][k]),
         fmt(fixed["z"][k])]
        for k, name in enumerate(model.param_names)
    ]
    blocks.append(Table(columns=["parameter", "σ ± SE", "1/√E_q[Hᵢᵢ]", "r ± SE", "r / SE"], rows=rows,
                        caption="rᵢ = σᵢ²·E_q[Hᵢᵢ] − 1; 0 at the mean-field fixed point."))
    image = figures.fixed_point_figure(model, fig_dir)
    return blocks + ([image] if image is not None else [])


def ablation_blocks(model: ModelResult, fig_dir: Path) -> list:
    fit = model.fits.get("kl_ablation")
    if fit is None or not fit.ok:
        return []
    rows = [
        [a["label"], "on" if a["include_prior"] else "off", "on" if a["include_entropy"] else "off",
         fmt(np.median(a["final_sd"])), fmt(a.get("median_final_over_full")),
         fmt(a["median_log_sigma_slope_per_1000_steps"]), a.get("verdict", "–")]
        for a in fit.info["arms"].values()
    ]
    blocks = [
        Heading(3, "Which KL term stops the collapse?"),
        Paragraph(
            f"Four runs of {fit.info['steps']} steps at the constant learning rate {fmt(fit.info['constant_lr'])}, "
            f"same seed (same noise draws); outcome: **{fit.info['outcome']}**."
            + (" The last arm is the `expected_loss` fit itself." if fit.info.get("reused_expected_loss") else "")
        ),
        Table(columns=["arm", "prior", "entropy", "final σ (median)", "/ full arm", "log σ slope /1000 steps",
                       "verdict"], rows=rows),
    ]
    image = figures.ablation_figure(model, fig_dir)
    return blocks + ([image] if image is not None else [])


def guides_blocks(model: ModelResult, fig_dir: Path) -> list:
    ref = model.reference
    methods = [m for m in figures.GUIDE_STYLE if m in model.fits and model.fits[m].ok]
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
    columns = ["parameter"] + [f"{figures.GUIDE_STYLE[m][2]} / ref" for m in methods]
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
    image = figures.guides_figure(model, fig_dir)
    return blocks + ([image] if image is not None else [])


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


def model_blocks(model: ModelResult, fig_dir: Path) -> list:
    """Blocks for one model's section."""
    if model.status != OK:
        return []
    fig_dir = Path(fig_dir)
    return (fixed_point_blocks(model, fig_dir) + ablation_blocks(model, fig_dir) + guides_blocks(model, fig_dir)
            + sweep_blocks(model, fig_dir))

