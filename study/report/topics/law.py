"""The law behind the shortfall: σ_SVI / reference sd predicted from the reference's correlations.

For a Gaussian posterior with covariance S the mean-field optimum is σᵢ = 1/√(S⁻¹)ᵢᵢ
(Bishop, PRML §10.1.2), so

    σᵢ / sdᵢ = 1/√(Sᵢᵢ (S⁻¹)ᵢᵢ) = √(1 − Rᵢ²),

Rᵢ² the share of θᵢ's posterior variance that the other coordinates explain. Each reference
stores that prediction (``study.methods.reference.shrink_law``); here it meets the measured
σ_SVI / reference sd: pooled over every parameter of the models with a trusted reference
(``law_answer``), per model, for the models that break it with the reason the study's own
diagnostics give, for the low-rank guide, and for one posterior in four parameterisations
(kidiq's interaction model). ``law_answer`` is part of ``study_answer`` (``results.json``);
the blocks read that dict alone, except the figure, which reads the same numbers from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.core.results import FLAGGED, ModelResult, StudyResult
from study.report.answer import fmt, listing, percent, with_se
from study.report.document import Heading, Image, Paragraph, Table
from study.report.plotting import DETAIL_DPI, SIGMA_SVI, plain_log_ticks, plt, save
from study.report.summary import HIGH_QUANTILE, LOW_QUANTILE, SVI, TOLERANCE, benchmark_models, usable_fit
from study.report.table import predicted_shrink

# A model breaks the law when any parameter's measured / predicted lies outside 1 ± BREAK
# (the typical SE of one such ratio is 3-4%: the prediction's ~3% from 1,000 gold draws and
# the fit's and the reference sd's ~1% each).
BREAK = 0.25
# A diagnostic names a reason when it is off by more than this factor at the worst parameter.
REASON_FACTOR = 1.25
# The low-rank guide's share of the gap closed is taken over the parameters whose mean-field
# gap 1 − σ_SVI / ref sd is at least this.
GAP_MIN = 0.10
# SE of every pooled law statistic: a bootstrap over models (the models are the independent
# units; a model's parameters share its posterior), this many resamples, this seed.
BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0

SE_TEXT = (f"SE: bootstrap over models ({BOOTSTRAP:,} resamples of the models with replacement, every parameter "
           "of a drawn model pooled), the spread due to which models the benchmark holds; each ratio's own Monte "
           "Carlo error (about 3% for the prediction from 1,000 gold draws) is smaller and not added")

# One posterior in four parameterisations: (model, how its design is written).
PARAMETERISATIONS = (
    ("kidiq-kidscore_interaction", "uncentred (posteriordb)"),
    ("kidiq_with_mom_work-kidscore_interaction_c", "mom_hs, mom_iq centred, then multiplied (posteriordb _c)"),
    ("kidiq_with_mom_work-kidscore_interaction_z", "mom_hs, mom_iq standardised, then multiplied (posteriordb _z)"),
    ("kidiq-kidscore_interaction_bambi", "every column centred, the product after forming it (Bambi)"),
)
PARAMETER_LABELS = {"beta[0]": "intercept", "beta[1]": "mom_hs", "beta[2]": "mom_iq", "beta[3]": "mom_hs × mom_iq",
                    "sigma (log)": "log σ"}
# Mean-field sd over NUTS sd for kidiq_interaction as a Bambi model, from DADVI's public results.
DADVI_SOURCE = "DADVI (Giordano, Ingram & Broderick, JMLR 2024), reported"
DADVI_MODEL = "kidiq-kidscore_interaction_bambi"
DADVI_REPORTED = {"beta[0]": 1.026, "beta[1]": 0.173, "beta[2]": 0.387, "beta[3]": 0.151, "sigma (log)": 0.957}


# -- the numbers ------------------------------------------------------------------------------


def _floats(values) -> list:
    return [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def _reasons(model: ModelResult, i: int) -> dict:
    """The study's diagnostics at parameter ``i``: σ_SVI against 1/√Hᵢᵢ at the mode, √(H⁻¹)ᵢᵢ
    against the reference sd, the law at the mode ((1/√Hᵢᵢ) / √(H⁻¹)ᵢᵢ, the Laplace
    approximation's own √(1 − Rᵢ²)), and whether the mean-field fit is flagged."""
    out: dict = {}
    svi, diag, full, ref = (usable_fit(model, m) for m in (SVI, "laplace_diag", "laplace_full", "reference"))
    if diag is not None:
        out["svi_over_laplace_diag"] = float(svi.sd[i] / diag.sd[i])
    if full is not None:
        out["laplace_full_over_reference"] = float(full.sd[i] / ref.sd[i])
    if diag is not None and full is not None:
        out["law_at_mode"] = float(diag.sd[i] / full.sd[i])
    if svi.status == FLAGGED:
        out["svi_flagged"] = svi.reason
    return out


def model_law(model: ModelResult) -> dict | None:
    """One model's measured σ_SVI / ref sd against the prediction, per parameter; None without both."""
    svi, ref = usable_fit(model, SVI), model.reference
    shrink, shrink_se = predicted_shrink(model)
    if svi is None or ref is None or shrink is None:
        return None
    measured = np.asarray(svi.sd, dtype=float) / np.asarray(ref.sd, dtype=float)
    predicted = np.asarray(shrink, dtype=float)
    ratio = measured / predicted
    worst = int(np.argmax(np.abs(np.log(ratio))))
    out = {
        "parameters": list(model.param_names),
        "measured": _floats(measured),
        "predicted": _floats(predicted),
        "predicted_se": _floats([np.nan if s is None else s for s in shrink_se]),
        "ratio": _floats(ratio),
        "median_measured": float(np.median(measured)),
        "median_predicted": float(np.median(predicted)),
        "median_ratio": float(np.median(ratio)),
        "q10_predicted": float(np.quantile(predicted, LOW_QUANTILE)),
        "q90_predicted": float(np.quantile(predicted, HIGH_QUANTILE)),
        "share_within": float(np.mean(np.abs(ratio - 1.0) <= TOLERANCE)),
        "worst_parameter": model.param_names[worst],
        "worst_measured": float(measured[worst]),
        "worst_predicted": float(predicted[worst]),
        "worst_ratio": float(ratio[worst]),
        "breaks": bool(np.any(np.abs(ratio - 1.0) > BREAK)),
        "diagnostics": _reasons(model, worst),
    }
    lowrank = usable_fit(model, "svi_lowrank")
    if lowrank is not None:
        out["lowrank"] = _floats(np.asarray(lowrank.sd, dtype=float) / np.asarray(ref.sd, dtype=float))
        out["lowrank_rank"] = lowrank.info.get("rank")
    return out


def _bootstrap(groups: list, statistic, seed: int = BOOTSTRAP_SEED) -> float | None:
    """SD of ``statistic(groups resampled with replacement)`` over ``BOOTSTRAP`` resamples (None for one group)."""
    if len(groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic([groups[j] for j in rng.integers(0, len(groups), len(groups))]) for _ in range(BOOTSTRAP)]
    values = [v for v in values if v is not None]
    # Rounded to 12 digits: a constant statistic's sd is a rounding residue, not an error.
    return round(float(np.std(values, ddof=1)), 12) if len(values) > 1 else None


def _median_ratio(groups):
    return float(np.median(np.concatenate([g[0] / g[1] for g in groups])))


def _share_within(groups):
    ratio = np.concatenate([g[0] / g[1] for g in groups])
    return float(np.mean(np.abs(ratio - 1.0) <= TOLERANCE))


def _log_correlation(groups):
    measured = np.log(np.concatenate([g[0] for g in groups]))
    predicted = np.log(np.concatenate([g[1] for g in groups]))
    if np.std(measured) == 0 or np.std(predicted) == 0:
        return None
    return float(np.corrcoef(measured, predicted)[0, 1])


def _gap_closed(groups):
    closed = np.concatenate([(g[2] - g[0]) / (1.0 - g[0]) for g in groups])
    return float(np.median(closed))


def law_answer(study: StudyResult) -> dict:
    """The law over the models with a trusted reference (``benchmark_models``).

    Returns
    -------
    dict
        ``models``: per model ``model_law``; ``missing``: model -> why it has no prediction;
        ``pooled``: over every parameter of those models, the median of measured / predicted
        with its 10–90% range, the share within ±``TOLERANCE``, the correlation of log measured
        with log predicted, each with its bootstrap-over-models SE; ``broken``: the models with
        a parameter outside 1 ± ``BREAK``, worst first; ``lowrank``: the low-rank guide's sd /
        ref sd and the share of the mean-field gap it closes, (sd_lowrank − σ_SVI) / (ref sd −
        σ_SVI) over the parameters with a gap of at least ``GAP_MIN``.
    """
    models, _ = benchmark_models(study)
    entries, missing = {}, {}
    for model in models:
        entry = model_law(model)
        if entry is not None:
            entries[model.name] = entry
        elif usable_fit(model, SVI) is not None:
            ref = model.reference
            missing[model.name] = (ref.info.get("predicted_shrink_missing")
                                   or "the reference predates the law (rerun it)")
    out: dict = {"models": entries, "missing": missing, "break": BREAK, "bootstrap": BOOTSTRAP}
    if not entries:
        return out
    groups = [(np.asarray(e["measured"], dtype=float), np.asarray(e["predicted"], dtype=float))
              for e in entries.values()]
    ratio = np.concatenate([m / p for m, p in groups])
    out["pooled"] = {
        "n": int(ratio.size),
        "n_models": len(groups),
        "median": float(np.median(ratio)),
        "median_se": _bootstrap(groups, _median_ratio),
        "q10": float(np.quantile(ratio, LOW_QUANTILE)),
        "q90": float(np.quantile(ratio, HIGH_QUANTILE)),
        "share_within": float(np.mean(np.abs(ratio - 1.0) <= TOLERANCE)),
        "share_se": _bootstrap(groups, _share_within),
        "log_correlation": _log_correlation(groups),
        "log_correlation_se": _bootstrap(groups, _log_correlation),
    }
    broken = [name for name, e in entries.items() if e["breaks"]]
    out["broken"] = sorted(broken, key=lambda n: (-abs(np.log(entries[n]["worst_ratio"])), n))
    gap_groups = []
    for e in entries.values():
        if "lowrank" not in e:
            continue
        measured, lowrank = np.asarray(e["measured"], dtype=float), np.asarray(e["lowrank"], dtype=float)
        keep = 1.0 - measured >= GAP_MIN
        if keep.any():
            gap_groups.append((measured[keep], np.asarray(e["predicted"], dtype=float)[keep], lowrank[keep]))
    if gap_groups:
        measured = np.concatenate([g[0] for g in gap_groups])
        lowrank = np.concatenate([g[2] for g in gap_groups])
        out["lowrank"] = {
            "n": int(measured.size),
            "n_models": len(gap_groups),
            "median_measured": float(np.median(measured)),
            "median_lowrank": float(np.median(lowrank)),
            "median_gap_closed": _gap_closed(gap_groups),
            "median_gap_closed_se": _bootstrap(gap_groups, _gap_closed),
        }
    return out


# -- the report -------------------------------------------------------------------------------


def law_figure(study: StudyResult, law: dict, fig_dir: Path) -> Image | None:
    """Measured σ_SVI / ref sd against predicted √(1 − Rᵢ²), log-log, one dot per parameter."""
    entries = law.get("models") or {}
    if not entries:
        return None
    titles = {m.name: m.title for m in study.models}
    fig, ax = plt.subplots(figsize=(8.6, 5.6))
    colours = plt.get_cmap("tab20")
    markers = "osD^v<>"
    values = []
    for k, (name, e) in enumerate(entries.items()):
        predicted, measured = np.asarray(e["predicted"], dtype=float), np.asarray(e["measured"], dtype=float)
        values.append(np.concatenate([predicted, measured]))
        # Dark shades first, then the light ones: neighbours in the legend differ in hue.
        shade = (2 * k) % 20 + (k // 10) % 2
        ax.plot(predicted, measured, markers[(k // 20) % len(markers)], color=colours(shade), ms=4, ls="none",
                label=titles.get(name, name), alpha=0.85)
    values = np.concatenate(values)
    lo, hi = float(np.min(values)) / 1.5, max(1.5, float(np.max(values)) * 1.2)
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="measured = predicted")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel=r"predicted $\sqrt{1 - R_i^2} = 1/\sqrt{S_{ii}(S^{-1})_{ii}}$",
           ylabel=SIGMA_SVI + " / reference sd (measured)",
           title="The shortfall law: one dot per parameter")
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.legend(fontsize=5, ncol=2 if len(entries) > 12 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)
    path = save(fig, dpi=DETAIL_DPI, path=fig_dir / "shortfall-law.png")
    pooled = law["pooled"]
    return Image(path, "Measured σ_SVI / reference sd against the predicted √(1 − Rᵢ²)",
                 f"{pooled['n']} parameters of {pooled['n_models']} models with a trusted reference, coloured by model; "
                 "the line is equality.")


def _reason_text(e: dict) -> str:
    d = e["diagnostics"]
    reasons = []
    diag = d.get("svi_over_laplace_diag")
    if diag is not None and abs(np.log(diag)) > np.log(REASON_FACTOR):
        reasons.append(f"E_q[Hᵢᵢ] far from Hᵢᵢ at the mode (σ_SVI / (1/√Hᵢᵢ) = {fmt(diag)})")
    full = d.get("laplace_full_over_reference")
    if full is not None and abs(np.log(full)) > np.log(REASON_FACTOR):
        reasons.append(f"a non-Gaussian posterior (√(H⁻¹)ᵢᵢ / reference sd = {fmt(full)})")
    mode = d.get("law_at_mode")
    if mode is not None and abs(np.log(mode / e["worst_predicted"])) > np.log(REASON_FACTOR):
        reasons.append(f"correlations at the mode unlike the posterior's, a non-Gaussian posterior (the law from "
                       f"the Hessian at the MAP, (1/√Hᵢᵢ) / √(H⁻¹)ᵢᵢ = {fmt(mode)}, against "
                       f"{fmt(e['worst_predicted'])} from the reference)")
    if d.get("svi_flagged"):
        reasons.append(f"σ_SVI flagged ({d['svi_flagged']})")
    if reasons:
        return listing(reasons)
    checked = [f"σ_SVI / (1/√Hᵢᵢ) = {fmt(diag)}" if diag is not None else None,
               f"√(H⁻¹)ᵢᵢ / reference sd = {fmt(full)}" if full is not None else None]
    checked = [c for c in checked if c]
    return ("none the study can show (" + ", ".join(checked) + ")") if checked else "not assessed (no Laplace fit)"


def law_table_statistics(law: dict) -> Table:
    p = law["pooled"]
    rows = [
        ["median of measured / predicted", with_se(p["median"], p["median_se"])],
        [f"{round(100 * LOW_QUANTILE)}–{round(100 * HIGH_QUANTILE)}% range", f"{fmt(p['q10'])}–{fmt(p['q90'])}"],
        [f"share within ±{round(100 * TOLERANCE)}%",
         f"{percent(p['share_within'])} ± {percent(p['share_se'])}" if p.get("share_se") is not None
         else percent(p["share_within"])],
        ["correlation of log measured with log predicted", with_se(p["log_correlation"], p["log_correlation_se"])],
    ]
    return Table(columns=["statistic", "value"], rows=rows,
                 caption=f"Over {p['n']} parameters of {p['n_models']} models with a trusted reference and a reference "
                         f"covariance. {SE_TEXT}.")


def law_model_table(law: dict, titles: dict[str, str]) -> Table:
    rows = []
    entries = law["models"]
    for name in sorted(entries, key=lambda n: (entries[n]["median_predicted"], n)):
        e = entries[name]
        lowrank = f"{fmt(float(np.median(e['lowrank'])))}" if e.get("lowrank") else "–"
        rows.append([titles.get(name, name), fmt(e["median_predicted"]), fmt(e["median_measured"]),
                     fmt(e["median_ratio"]), f"`{e['worst_parameter']}` {fmt(e['worst_ratio'])}", lowrank])
    return Table(columns=["model", "predicted √(1 − Rᵢ²)", "measured σ_SVI / ref", "measured / predicted",
                          "farthest parameter", "low-rank / ref"],
                 rows=rows, caption="Medians over each model's parameters, ordered by the prediction; farthest "
                                    "parameter: the largest |log(measured / predicted)|.")


def broken_table(law: dict, titles: dict[str, str]) -> Table | None:
    rows = []
    for name in law.get("broken", []):
        e = law["models"][name]
        rows.append([titles.get(name, name), fmt(e["median_ratio"]),
                     f"`{e['worst_parameter']}`: {fmt(e['worst_measured'])} against {fmt(e['worst_predicted'])}",
                     _reason_text(e)])
    if not rows:
        return None
    return Table(columns=["model", "median measured / predicted", "farthest parameter: measured against predicted",
                          "reason the study shows (at that parameter)"],
                 rows=rows, numeric=False,
                 caption=f"Models with at least one parameter whose measured / predicted lies outside "
                         f"{fmt(1 - BREAK)}–{fmt(1 + BREAK)}, farthest first. A reason is named when its diagnostic "
                         f"is off by more than a factor {REASON_FACTOR}: σ_SVI against the diagonal Laplace sd "
                         "1/√Hᵢᵢ (the mean-field fixed point holds E_q[Hᵢᵢ], not Hᵢᵢ at the mode); √(H⁻¹)ᵢᵢ "
                         "against the reference sd (equal for a Gaussian posterior, for which the law is exact); "
                         "the law computed from the Hessian at the MAP against the reference's prediction.")


def law_sentences(law: dict) -> list[str]:
    p = law["pooled"]
    correlation = "" if p["log_correlation"] is None else (
        f", and the logs correlate at {with_se(p['log_correlation'], p['log_correlation_se'])}")
    out = [
        "For a Gaussian posterior with covariance S the mean-field optimum is σᵢ = 1/√(S⁻¹)ᵢᵢ (Bishop, PRML "
        "§10.1.2), so σᵢ / sdᵢ = 1/√(Sᵢᵢ (S⁻¹)ᵢᵢ) = √(1 − Rᵢ²), Rᵢ² the share of the parameter's posterior "
        "variance that the others explain: the reference's covariance alone predicts σ_SVI's shortfall.",
        f"Over {p['n']} parameters of {p['n_models']} models, measured σ_SVI / reference sd over predicted has median "
        f"{with_se(p['median'], p['median_se'])} ({percent(p['share_within'])} of parameters within "
        f"±{round(100 * TOLERANCE)}%){correlation}.",
    ]
    if abs(p["median"] - 1.0) <= TOLERANCE:
        out.append("The shortfall is a property of the posterior's correlations in the chosen parameterisation, "
                   "not of the optimiser.")
    else:
        out.append(f"The median is more than {round(100 * TOLERANCE)}% from 1: in this run the law does not account "
                   "for the shortfall.")
    return out


def lowrank_sentence(law: dict) -> str | None:
    low = law.get("lowrank")
    if not low:
        return None
    return (f"The low-rank guide (rank √d, with a diagonal) closes a median "
            f"{with_se(low['median_gap_closed'], low['median_gap_closed_se'])} of the mean-field gap, "
            f"(sd_low-rank − σ_SVI) / (ref sd − σ_SVI), over the {low['n']} parameters of {low['n_models']} models "
            f"whose σ_SVI falls at least {round(100 * GAP_MIN)}% short (median σ_SVI / ref {fmt(low['median_measured'])}, "
            f"low-rank / ref {fmt(low['median_lowrank'])}; SE as above).")


def parameterisation_table(law: dict, titles: dict[str, str]) -> Table | None:
    entries = law.get("models") or {}
    rows = []
    for name, how in PARAMETERISATIONS:
        e = entries.get(name)
        if e is None:
            continue
        for k, parameter in enumerate(e["parameters"]):
            reported = DADVI_REPORTED.get(parameter) if name == DADVI_MODEL else None
            rows.append([f"{how}" if k == 0 else "", PARAMETER_LABELS.get(parameter, parameter),
                         fmt(e["measured"][k]), with_se(e["predicted"][k], e["predicted_se"][k]),
                         "–" if reported is None else f"{reported:.3f}"])
    if not rows:
        return None
    return Table(columns=["parameterisation", "parameter", "σ_SVI / ref sd (measured)",
                          "√(1 − Rᵢ²) (predicted ± SE)", DADVI_SOURCE],
                 rows=rows, numeric=False,
                 caption="kidiq: a child's test score on the mother's high-school diploma (mom_hs), IQ (mom_iq) and "
                         "their product, 434 children (Gelman & Hill 2007). The uncentred and Bambi models have "
                         "sigma ~ half-Cauchy(0, 2.5), posteriordb's _c and _z a flat prior on sigma; every "
                         "coefficient is flat. DADVI's figures are mean-field sd over NUTS sd from their objective "
                         "with 30 fixed draws (their sigma's figure stands in the log σ row); the prediction is from the 1,000 shipped thinned gold draws (± its "
                         "bootstrap SE).")


def parameterisation_blocks(law: dict, titles: dict[str, str]) -> list:
    table = parameterisation_table(law, titles)
    if table is None:
        return []
    return [
        Heading(3, "Parameterisation", anchor="parameterisation"),
        Paragraph("One regression on the same data in four parameterisations: the design's columns change, and with "
                  "them the posterior's correlations (posteriordb's _c and _z also put a flat prior on σ). Measured "
                  "σ_SVI / reference sd beside the law's prediction, per parameter:"),
        table,
        Paragraph("Centre or standardise the predictors before reading σ_SVI as an uncertainty, or use the "
                  "linear-response correction (Giordano, Broderick & Jordan 2018), which recovers the marginal sd."),
    ]


def law_answer_blocks(study: StudyResult, answer: dict, fig_dir: Path) -> list:
    """The report section "The law behind the shortfall" and the parameterisation section."""
    law = answer.get("law") or {}
    titles = {m.name: m.title for m in study.models}
    missing = Table(columns=["model without a prediction", "why"], numeric=False,
                    rows=[[titles.get(n, n), why] for n, why in (law.get("missing") or {}).items()])
    if not law.get("pooled"):
        return [Heading(3, "The law behind the shortfall", anchor="law"), missing] if law.get("missing") else []
    blocks: list = [Heading(3, "The law behind the shortfall", anchor="law"), Paragraph(" ".join(law_sentences(law))),
                    law_table_statistics(law)]
    image = law_figure(study, law, Path(fig_dir))
    if image is not None:
        blocks.append(image)
    broken = broken_table(law, titles)
    if broken is not None:
        blocks += [Paragraph(f"{len(law['broken'])} of {law['pooled']['n_models']} models break the law "
                             f"(a parameter off by more than {round(100 * BREAK)}%):"), broken]
    else:
        blocks.append(Paragraph(f"No model has a parameter off the law by more than {round(100 * BREAK)}%."))
    if law.get("missing"):
        blocks.append(missing)
    low = lowrank_sentence(law)
    if low:
        blocks.append(Paragraph(low))
    blocks.append(law_model_table(law, titles))
    blocks += parameterisation_blocks(law, titles)
    return blocks
