"""The answer over the benchmark: the statistics published studies of VI report, pooled and per model.

Over every parameter of every model with a trusted reference
(``study.report.summary.benchmark_answer``): for σ_SVI, linear response, the
low-rank and full-rank guides and √(H⁻¹)ᵢᵢ, the median of sd / reference sd
with its Monte Carlo SE, its 10–90% range and the share within ±10%; the same
per model; the worst models with their likely cause; σ_SVI against 1/√Hᵢᵢ over
the same set. Every function here reads the ``answer`` dict alone, so the report
and the README (from ``results.json``) print the same tables.
"""

from __future__ import annotations

from study.report.answer import fmt, listing, percent, with_se
from study.report.document import Bullets, Heading, Paragraph, Table
from study.report.summary import (
    CORRELATION_GAP, FUNNEL_GAP, HIGH_QUANTILE, LOW_QUANTILE, N_WORST, NON_GAUSSIAN_GAP, SVI, TOLERANCE,
)

LABELS = {
    "svi_meanfield": "σ_SVI (mean-field)",
    "svi_meanfield_lr": "linear response",
    "svi_lowrank": "low-rank guide",
    "svi_fullrank": "full-rank guide",
    "laplace_full": "√(H⁻¹)ᵢᵢ (Laplace)",
}
DIAGONAL_LABEL = "σ_SVI / (1/√Hᵢᵢ)"

# What the published studies measured, as far as this report cites them: qualitative only,
# no number is quoted from them.
LITERATURE = (
    "Published studies judge variational sds against MCMC or reference draws in the same spirit, though, as "
    "far as we know, none prints exactly these three pooled statistics, so the comparison is qualitative and "
    "no number of theirs is quoted here. Giordano, Broderick & Jordan (2018, \"Covariances, robustness, and "
    "variational Bayes\", JMLR) show that mean-field VB often mis-estimates posterior variances even when its "
    "means are good, and that the linear-response correction brings the sds close to MCMC's; the linear-"
    "response row tests that claim here. Yao, Vehtari, Simpson & Gelman (2018, \"Yes, but did it work?\", ICML) "
    "diagnose mean-field ADVI with Pareto k̂ and VSBC and show examples where it fails. Dhaka et al. (2020, "
    "\"Robust, accurate stochastic optimization for variational "
    "inference\", NeurIPS) and Welandawe, Andersen, Vehtari & Huggins (2022, \"Robust, automated, and accurate "
    "black-box variational inference\") evaluate the optimisation of black-box VI across collections of "
    "real-world models. Magnusson et al. (2024, \"posteriordb: testing, benchmarking and "
    "developing Bayesian inference algorithms\") describe the database and its reference posteriors that this "
    "study's posteriordb models use. The common qualitative picture: mean-field σ tends to understate the "
    "marginal sd, and, in Giordano et al.'s examples, linear response recovers it where the mean-field means "
    "are accurate."
)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def literature_comparison(answer: dict) -> str:
    """Whether this run shows the published pattern, chosen by ``TOLERANCE`` on the pooled medians."""
    methods = (answer.get("benchmark") or {}).get("methods") or {}
    svi = methods.get(SVI)
    if not svi:
        return ""
    richer = [LABELS[m] for m in ("svi_meanfield_lr", "svi_fullrank")
              if m in methods and abs(methods[m]["median"] - 1) <= TOLERANCE]
    if svi["median"] < 1 - TOLERANCE and richer:
        return (f"This run agrees: σ_SVI falls short (median {fmt(svi['median'])}) and {listing(richer)} "
                f"{'brings' if len(richer) == 1 else 'bring'} the median within ±{round(100 * TOLERANCE)}% of 1.")
    if svi["median"] < 1 - TOLERANCE:
        return (f"This run agrees that σ_SVI falls short (median {fmt(svi['median'])}), but no richer guide brings "
                f"the median within ±{round(100 * TOLERANCE)}% of 1 here.")
    return (f"This run does not show the shortfall: σ_SVI's median ratio is {fmt(svi['median'])}, within or above "
            f"{round(100 * (1 - TOLERANCE))}% of the reference.")


def _stat_cell(entry: dict | None) -> str:
    """``median ± SE [q10–q90], share within`` of a ``pooled_statistics`` entry."""
    if not entry:
        return "–"
    return (f"{with_se(entry['median'], entry.get('median_se'), entry.get('se_complete', True))} "
            f"[{fmt(entry['q10'])}–{fmt(entry['q90'])}] {percent(entry['share_within'])}")


def benchmark_table(answer: dict) -> Table | None:
    """One row per method: median ± SE, 10–90% range, share within ±10% (± SE), parameters and models."""
    bench = answer.get("benchmark") or {}
    methods = bench.get("methods") or {}
    rows = []
    entries = [(LABELS[m] + " / ref sd", methods.get(m)) for m in LABELS]
    entries.append((DIAGONAL_LABEL, bench.get("svi_over_laplace_diag")))
    for label, e in entries:
        if not e:
            continue
        complete = e.get("se_complete", True)
        rows.append([
            label,
            with_se(e["median"], e.get("median_se"), complete),
            f"{fmt(e['q10'])}–{fmt(e['q90'])}",
            (f"{percent(e['share_within'])} ± {percent(e['share_se'])}" if e.get("share_se") is not None
             else percent(e["share_within"])),
            f"{e['n']} ({e.get('n_models', '–')})",
        ])
    if not rows:
        return None
    low, high = round(100 * LOW_QUANTILE), round(100 * HIGH_QUANTILE)
    return Table(
        columns=["sd ratio", "median ± SE", f"{low}–{high}% range", f"within ±{round(100 * TOLERANCE)}%",
                 "parameters (models)"],
        rows=rows,
        caption=(f"Over every parameter of the {_plural(bench.get('n_models', 0), 'model')} with a trusted reference. SE: the "
                 "Monte Carlo error of the median and of the share, propagated from each ratio's own error (σ_SVI's "
                 "seed-to-seed error, the reference's Monte Carlo error; Laplace and analytic sds are exact); * an SE "
                 "that leaves out a source (a single-seed fit's optimiser noise, the mean-field fit's error under "
                 f"linear response). The last row is σ_SVI against the diagonal Laplace sd over the same models."),
    )


PREDICTED_LABEL = "predicted √(1 − Rᵢ²)"


def _predicted_cell(entry: dict | None) -> str:
    """``median [q10–q90]`` of a model's predicted σ_SVI / ref (``answer["law"]["models"]``)."""
    if not entry:
        return "–"
    return f"{fmt(entry['median_predicted'])} [{fmt(entry['q10_predicted'])}–{fmt(entry['q90_predicted'])}]"


def cause_text(causes: dict) -> str:
    """The likely causes of one model's error, each with the diagnostic and threshold that named it."""
    found = []
    if "correlation" in causes["causes"]:
        found.append(f"correlation (√(H⁻¹)ᵢᵢ / (1/√Hᵢᵢ) median {fmt(causes['correlation_gap'])} > {CORRELATION_GAP})")
    if "non-Gaussian" in causes["causes"]:
        found.append(f"non-Gaussianity (√(H⁻¹)ᵢᵢ off the reference by a typical factor "
                     f"{fmt(causes['non_gaussian_gap'])} > {NON_GAUSSIAN_GAP})")
    if "funnel" in causes["causes"]:
        found.append(f"a funnel (scale {', '.join(f'`{s}`' for s in causes['funnel_scales'])} with hierarchical "
                     f"children; its σ_SVI off by a factor {fmt(causes['funnel_gap'])} > {FUNNEL_GAP})")
    if found:
        return listing(found)
    if not causes["assessed"]:
        return "not assessed (no Laplace fit)"
    return "none of the diagnostics exceeds its threshold (" + ", ".join(causes["assessed"]) + " checked)"


def model_table(answer: dict, titles: dict[str, str] | None = None) -> Table | None:
    """Per model (worst first): each method's statistics against the reference, σ_SVI / (1/√Hᵢᵢ), the likely cause."""
    titles = titles or {}
    bench = answer.get("benchmark") or {}
    models = bench.get("models") or {}
    if not models:
        return None
    order = sorted(models, key=lambda n: (-models[n].get("typical_error", 0.0), n))
    law = (answer.get("law") or {}).get("models") or {}
    rows = []
    for name in order:
        e = models[name]
        cells = [_stat_cell(e["methods"].get(m)) for m in LABELS]
        cells.insert(1, _predicted_cell(law.get(name)))
        rows.append([titles.get(name, name)] + cells
                    + [_stat_cell(e.get("svi_over_laplace_diag")), cause_text(e["likely_causes"])])
    columns = [f"{label} / ref" for label in LABELS.values()]
    columns.insert(1, PREDICTED_LABEL)
    return Table(
        columns=["model"] + columns + [DIAGONAL_LABEL, "likely cause"],
        rows=rows,
        caption=(f"Per model, worst first (by σ_SVI's typical error, exp(median |log(σ_SVI / ref sd)|)): median ± SE "
                 f"[{round(100 * LOW_QUANTILE)}–{round(100 * HIGH_QUANTILE)}% range] share within "
                 f"±{round(100 * TOLERANCE)}%. {PREDICTED_LABEL}: what the reference's correlations predict for "
                 f"σ_SVI / ref (see the law below), median [{round(100 * LOW_QUANTILE)}–"
                 f"{round(100 * HIGH_QUANTILE)}% range] over the parameters; – where the reference gives no covariance."),
    )


def worst_bullets(answer: dict, titles: dict[str, str] | None = None) -> Bullets | None:
    titles = titles or {}
    bench = answer.get("benchmark") or {}
    items = []
    for name in bench.get("worst", []):
        e = bench["models"][name]
        svi = e["methods"].get(SVI)
        items.append(f"{titles.get(name, name)}: σ_SVI / ref sd median "
                     f"{with_se(svi['median'], svi.get('median_se'), svi.get('se_complete', True))}, typical error "
                     f"×{fmt(e['typical_error'])}; likely cause: {cause_text(e['likely_causes'])}.")
    return Bullets(items) if items else None


def summary_sentences(answer: dict) -> list[str]:
    """What the pooled numbers say, chosen by ``TOLERANCE``: which methods recover the marginal sd."""
    bench = answer.get("benchmark") or {}
    methods = bench.get("methods") or {}
    if not methods:
        return []
    within = f"±{round(100 * TOLERANCE)}%"
    close = [LABELS[m] for m, e in methods.items() if abs(e["median"] - 1) <= TOLERANCE]
    far = [LABELS[m] for m, e in methods.items() if abs(e["median"] - 1) > TOLERANCE]
    out = [f"Over {bench['n_parameters']} parameters of {_plural(bench['n_models'], 'model')} with a trusted "
           "reference:"]
    if close:
        out.append(f"the median ratio is within {within} of 1 for {listing(close)};")
    if far:
        out.append(f"it is not for {listing(far)}.")
    elif close:
        out[-1] = out[-1].rstrip(";") + "."
    best = max(methods, key=lambda m: methods[m]["share_within"])
    out.append(f"The largest share of parameters within {within} is {percent(methods[best]['share_within'])}, "
               f"for {LABELS[best]}.")
    diag = bench.get("svi_over_laplace_diag")
    if diag:
        out.append(f"Over the same parameters σ_SVI / (1/√Hᵢᵢ) has median "
                   f"{with_se(diag['median'], diag.get('median_se'), diag.get('se_complete', True))}, "
                   f"{percent(diag['share_within'])} within {within}.")
    return out


def thresholds_text() -> str:
    return (f"Likely causes, each named when its measured diagnostic crosses a stated threshold: correlation when "
            f"the median √(H⁻¹)ᵢᵢ / (1/√Hᵢᵢ) (marginal over conditional sd at the MAP) exceeds {CORRELATION_GAP}; "
            f"non-Gaussianity when √(H⁻¹)ᵢᵢ, exact for a Gaussian posterior, misses the reference sd by a typical "
            f"factor (exp(median |log ratio|)) above {NON_GAUSSIAN_GAP}; a funnel when a scale parameter has "
            f"hierarchical children (its value sets their prior's spread) and its own σ_SVI misses the reference "
            f"by more than a factor {FUNNEL_GAP}. The worst models (at most {N_WORST}) are those with the largest "
            f"typical error of σ_SVI, exp(median |log(σ_SVI / reference sd)|), among those above {fmt(1 + TOLERANCE)}.")


def benchmark_answer_blocks(study, answer: dict) -> list:
    """The report section "The answer over the benchmark"."""
    bench = answer.get("benchmark") or {}
    table = benchmark_table(answer)
    if table is None:
        return []
    titles = {m.name: m.title for m in study.models}
    blocks: list = [Heading(3, "The answer over the benchmark", anchor="benchmark"),
                    Paragraph(" ".join(summary_sentences(answer))), table]
    if bench.get("left_out"):
        blocks.append(Table(columns=["model left out", "why"], numeric=False,
                            rows=[[titles.get(n, n), why] for n, why in bench["left_out"].items()],
                            caption="Models without a trusted reference: not in the pooled numbers above."))
    worst = worst_bullets(answer, titles)
    if worst is not None:
        n = len(worst.items)
        blocks += [Paragraph("The worst model and its likely cause:" if n == 1
                             else f"The worst {n} models and their likely causes:"), worst]
    elif bench.get("models"):
        blocks.append(Paragraph(f"No model's σ_SVI is off its reference by a typical factor above "
                                f"{fmt(1 + TOLERANCE)}."))
    blocks.append(Paragraph(thresholds_text()))
    per_model = model_table(answer, titles)
    if per_model is not None:
        blocks.append(per_model)
    blocks.append(Paragraph(f"{LITERATURE} {literature_comparison(answer)}".strip()))
    return blocks
