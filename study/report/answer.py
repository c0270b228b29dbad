"""The answer in words, chosen from the numbers.

Every claim of the answer paragraph is picked by a threshold on the numbers of
``study.summary.study_answer`` (the ``answer`` dict that ``results.json``
stores), never written as fixed prose: a run in which σ does not track
1/√Hᵢᵢ says so. The paragraph is a function of that dict alone, so the report
(from a live run) and the README (from ``results.json``) state the same thing.
"""

from __future__ import annotations

import math

import numpy as np

from study.report.summary import BAND, TOLERANCE

# A model "follows" a comparison when at least this share of its parameters lie
# within a factor BAND of the compared sd.
FOLLOW_SHARE = 0.9
# The mean-field fit counts as unsettled when σ changed by more than this fraction
# between the two halves of its averaging window (``sigma_drift``).
MAX_DRIFT = 0.05

QUESTION = (
    "Put a Gaussian N(μᵢ, σᵢ²) over every parameter, learn μ and σ with the reparameterisation "
    "trick: is the learned σ a proxy for the diagonal of the Hessian? And what does it say about "
    "the posterior's real uncertainty? Trained without any prior/entropy term, σ collapses to 0."
)


def fmt(x, digits: int = 3) -> str:
    """A number for the text: ``digits`` significant digits, scientific when tiny or huge."""
    if x is None:
        return "–"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def with_se(value, se, complete: bool = True) -> str:
    """``1.02 ± 0.01``; a trailing ``*`` when the SE leaves out a source of error."""
    if value is None:
        return "–"
    if se is None or (not complete and se == 0):
        return f"{fmt(value)} (SE n/a)"
    return f"{fmt(value)} ± {fmt(se, 2)}" + ("" if complete else "*")


def ratio_cell(entry: dict | None) -> str:
    """Median ± SE (worst ± SE) of a ``summary.describe`` entry."""
    if not entry:
        return "–"
    complete = entry.get("se_complete", True)
    return (f"{with_se(entry['median'], entry.get('median_se'), complete)} "
            f"({with_se(entry['worst'], entry.get('worst_se'), complete)})")


def percent(share: float) -> str:
    """A share in [0, 1] as a whole percentage, e.g. ``"93%"``."""
    return f"{round(100 * share)}%"


def _median(entry: dict, bold: bool = True) -> str:
    """A median with its Monte Carlo SE (``summary.describe``), e.g. ``**1.05** ± 0.0046``."""
    value = f"**{fmt(entry['median'])}**" if bold else fmt(entry["median"])
    se = entry.get("median_se")
    if se is None:
        return value
    return f"{value} ± {fmt(se, 2)}" + ("" if entry.get("se_complete", True) else "*")


def _band_percent() -> str:
    return f"{round(100 * (BAND - 1))}%"


def _listing(items: list[str]) -> str:
    """``a, b and c``; with semicolons when an item has a comma of its own."""
    if len(items) <= 1:
        return "".join(items)
    sep = "; " if any("," in item for item in items) else ", "
    return sep.join(items[:-1]) + (";" if sep == "; " else "") + " and " + items[-1]


listing = _listing  # the public name, for the report's topics


def _in_band(x) -> bool:
    return x is not None and x > 0 and abs(math.log(x)) < math.log(BAND)


def follows(entry: dict | None) -> bool:
    """True when a model's comparison has at least ``FOLLOW_SHARE`` of its parameters within ``BAND``."""
    return entry is not None and entry.get("share_within_band", 0.0) >= FOLLOW_SHARE


def _name(name: str, titles: dict[str, str]) -> str:
    return titles.get(name, f"`{name}`")


def model_groups(answer: dict) -> dict[str, list[str]]:
    """Models sorted by what their numbers say.

    Returns
    -------
    dict
        ``curvature``: models with σ_SVI / (1/√Hᵢᵢ) available; ``follow``: those
        within ``BAND`` for at least ``FOLLOW_SHARE`` of their parameters;
        ``break``: the others. ``trusted``: models with σ_SVI / reference sd from a
        trusted reference; ``short``: those whose median is below 1/BAND;
        ``short_conditional``: of those, the ones whose 1/√Hᵢᵢ is short of the
        reference as well (median below 1/BAND); ``wide``: median above BAND;
        ``untrusted``: models whose NUTS reference failed its checks.
    """
    models = answer["models"]
    groups: dict[str, list[str]] = {k: [] for k in (
        "curvature", "follow", "break", "trusted", "short", "short_conditional", "wide", "untrusted")}
    for name, a in models.items():
        if "svi_over_laplace_diag" in a:
            groups["curvature"].append(name)
            groups["follow" if follows(a["svi_over_laplace_diag"]) else "break"].append(name)
        if "reference_untrusted" in a:
            groups["untrusted"].append(name)
            continue
        ref = a.get("svi_over_reference")
        if ref is None:
            continue
        groups["trusted"].append(name)
        if ref["median"] < 1 / BAND:
            groups["short"].append(name)
            diag = a.get("laplace_diag_over_reference")
            if diag is not None and diag["median"] < 1 / BAND:
                groups["short_conditional"].append(name)
        elif ref["median"] > BAND:
            groups["wide"].append(name)
    return groups


def break_reason(a: dict) -> tuple[str, bool]:
    """Why one model's σ departs from 1/√Hᵢᵢ, as far as its numbers tell.

    Returns ``(text, non_gaussian)``: ``non_gaussian`` is True when the numbers
    show a posterior that is far from Gaussian around the MAP.
    """
    reasons, non_gaussian = [], False
    drift = a.get("svi_sigma_drift")
    if drift is not None and drift > MAX_DRIFT:
        reasons.append(f"σ had not settled (it moved by {percent(drift)} within its averaging window)")
    untrusted = a.get("reference_untrusted")
    full = a.get("laplace_full_over_reference")
    if untrusted is not None:
        non_gaussian = True
        reasons.append("NUTS did not mix on it, the mark of a multimodal or strongly non-Gaussian posterior")
    elif full is not None and not follows(full):
        non_gaussian = True
        reasons.append(f"√(H⁻¹)ᵢᵢ misses the reference sd too (median ratio {fmt(full['median'])}), so the "
                       "posterior is not Gaussian around the MAP")
    off = a.get("svi_fixed_point_z")
    if off is not None:
        reasons.append(f"σ is not at the mean-field fixed point σᵢ⁻² = E_q[Hᵢᵢ] (largest residual {fmt(off)} SE; "
                       "the fit is flagged)")
    if not reasons:
        if full is None:
            reasons.append("no trusted reference tells whether its posterior is Gaussian")
        else:
            reasons.append("its Laplace approximation matches the reference; these numbers do not explain why")
    return ", and ".join(reasons), non_gaussian


def curvature_sentences(answer: dict, groups: dict, titles: dict[str, str]) -> list[str]:
    diag = answer["pooled"].get("svi_over_laplace_diag")
    if diag is None:
        return []
    models = answer["models"]
    n = len(groups["curvature"])
    out = [
        f"Across {n} model{'s' if n != 1 else ''} ({diag['n']} parameters), the converged mean-field σ "
        f"divided by 1/√Hᵢᵢ at the MAP (the diagonal Laplace sd) has median {_median(diag)} "
        f"(middle half {fmt(diag['q25'])}–{fmt(diag['q75'])}, range {fmt(diag['min'])}–{fmt(diag['max'])}); "
        f"{percent(diag['share_within_band'])} of the parameters are within {_band_percent()} of it."
    ]
    follow, broken = groups["follow"], groups["break"]
    rule = (f"at least {percent(FOLLOW_SHARE)} of the parameters within {_band_percent()}")
    if not broken:
        out.append(
            f"That holds in every model ({rule}): σ is a proxy for the Hessian diagonal, σᵢ ≈ 1/√Hᵢᵢ, the "
            "*conditional* sd of each parameter given all the others, as the mean-field fixed point "
            "σᵢ⁻² = E_q[Hᵢᵢ] says when the curvature hardly changes over q (Opper & Archambeau 2009)."
        )
        return out
    if len(follow) * 2 >= n:
        out.append(
            f"In {len(follow)} of {n} models ({rule}) σ is a proxy for the Hessian diagonal, σᵢ ≈ 1/√Hᵢᵢ, "
            "the *conditional* sd of each parameter given all the others, as the mean-field fixed point "
            "σᵢ⁻² = E_q[Hᵢᵢ] says when the curvature hardly changes over q (Opper & Archambeau 2009)."
        )
    else:
        out.append(
            f"Only {len(follow)} of {n} models have {rule}: in this run σ is not a reliable proxy for "
            "1/√Hᵢᵢ at the MAP."
        )
    reasons, non_gaussian = [], False
    for name in broken:
        entry = models[name]["svi_over_laplace_diag"]
        text, flag = break_reason(models[name])
        non_gaussian |= flag
        reasons.append(f"Not in {_name(name, titles)} (median {_median(entry, bold=False)}, "
                       f"{percent(entry['share_within_band'])} within): {text}.")
    out.extend(reasons)
    if non_gaussian:
        out.append(
            "That is expected where the posterior is not Gaussian: the fixed point ties σᵢ to E_q[Hᵢᵢ], "
            "the curvature averaged over q, not to Hᵢᵢ at the MAP."
        )
    return out


def reference_sentences(answer: dict, groups: dict, titles: dict[str, str]) -> list[str]:
    pooled, models = answer["pooled"], answer["models"]
    ref = pooled.get("svi_over_reference")
    out = []
    left_out = ""
    if groups["untrusted"]:
        notes = [f"{_name(name, titles)}, whose NUTS reference is untrusted: "
                 f"{models[name]['reference_untrusted']['reason']}" for name in groups["untrusted"]]
        left_out = f" (leaving out {'; '.join(notes)})"
    if ref is None:
        if left_out:
            out.append(f"No trusted reference remains to compare σ with{left_out}.")
        return out
    m = len(groups["trusted"])
    out.append(
        f"Against the reference marginal sd{left_out}, σ_SVI over {m} model{'s' if m != 1 else ''} "
        f"({ref['n']} parameters) has median {_median(ref)} (range {fmt(ref['min'])}–{fmt(ref['max'])}; "
        f"farthest from 1: {fmt(ref['worst'])}, `{ref['worst_parameter']}`)."
    )
    short, conditional, wide = groups["short"], groups["short_conditional"], groups["wide"]
    shortfall = f"{round(100 * (1 - 1 / BAND))}%"
    if short:
        names = _listing([_name(s, titles) for s in short])
        text = (f"Its median falls more than {shortfall} short of the reference in {len(short)} of {m} "
                f"models ({names})")
        if conditional and len(conditional) == len(short):
            text += (f", and {'there' if len(short) == 1 else 'in each of them'} 1/√Hᵢᵢ falls short as well: "
                     "the marginal sd exceeds the "
                     "conditional one because the parameters are correlated (Bishop, PRML §10.1.2), "
                     "and σ is not the posterior's uncertainty there")
        elif conditional:
            text += (f"; in {len(conditional)} of them 1/√Hᵢᵢ falls short as well, the gap between the "
                     "conditional and the marginal sd of correlated parameters (Bishop, PRML §10.1.2)")
        out.append(text + ".")
    else:
        out.append(f"In no model does its median fall more than {shortfall} short of the reference.")
    if wide:
        out.append(f"It exceeds the reference by more than {_band_percent()} in "
                   f"{_listing([_name(s, titles) for s in wide])}.")
    full = pooled.get("laplace_full_over_reference")
    if full is not None:
        out.append(
            f"The full Laplace sd √(H⁻¹)ᵢᵢ is within {_band_percent()} of the reference for "
            f"{percent(full['share_within_band'])} of the parameters (median {_median(full, bold=False)})."
        )
    return out


def _after_steps(answer: dict) -> str:
    steps = {a["expected_loss"].get("steps") for a in answer["models"].values() if "expected_loss" in a}
    steps.discard(None)
    if not steps:
        return ""
    return f" after {min(steps)} steps" if len(steps) == 1 else f" after {min(steps)}–{max(steps)} steps"


def collapse_sentences(answer: dict, titles: dict[str, str]) -> list[str]:
    collapse = answer["pooled"].get("expected_loss_final_sigma_over_svi_median")
    if not collapse:
        return []
    slopes = {name: a["expected_loss"].get("median_log_sigma_slope_per_1000_steps")
              for name, a in answer["models"].items() if "expected_loss" in a}
    slopes = {k: v for k, v in slopes.items() if v is not None}
    falling = [k for k, v in slopes.items() if v < 0]
    text = (
        f"Trained on the expected loss alone (no prior, no entropy), σ ended{_after_steps(answer)} at a median "
        f"**{fmt(collapse['median'])}** of the ELBO's σ (largest per-model median {fmt(collapse['max'])}, "
        f"{collapse['n_models']} models)"
    )
    if slopes:
        where = "every model" if len(falling) == len(slopes) else f"{len(falling)} of {len(slopes)} models"
        text += (f", and log σ was still falling at the end in {where} (median slope "
                 f"{fmt(float(np.median(list(slopes.values()))))} per 1000 steps)")
        flat = [k for k in slopes if k not in falling]
        if flat:
            text += f"; not in {_listing([_name(k, titles) for k in flat])}"
    return [text + "."]


def answer_paragraph(answer: dict, titles: dict[str, str] | None = None) -> str:
    """The one-paragraph answer (inline Markdown) from ``study_answer``'s dict.

    Parameters
    ----------
    answer : dict
        ``study.summary.study_answer(study)``, or ``results.json["answer"]``.
    titles : dict, optional
        Model name -> readable title.
    """
    titles = titles or {}
    groups = model_groups(answer)
    parts = (curvature_sentences(answer, groups, titles) + reference_sentences(answer, groups, titles)
             + collapse_sentences(answer, titles))
    return " ".join(parts) if parts else "No model produced the fits needed for an answer."


# -- the answer a reader gets first ---------------------------------------------------------------
#
# Three sentences, each with its key number and that number's Monte Carlo SE: what σ is a
# proxy for, what it misses and by how much, what happens without the KL term. Every
# wording is chosen by a threshold on the numbers of ``summary.headline_answer`` and
# ``summary.benchmark_answer``.

# σ "is" a proxy for 1/√Hᵢᵢ (or matches the reference) when the median ratio is within
# summary.TOLERANCE (±10%) of 1.
# σ has "collapsed" when the expected-loss run's σ ends below this fraction of σ_SVI.
COLLAPSED = 0.1


def _close(entry: dict) -> bool:
    return abs(entry["median"] - 1.0) <= TOLERANCE


def _stat(entry: dict, bold: bool = True) -> str:
    """``**0.544** ± 0.0083`` from a ``summary.pooled_statistics`` entry; ``*``: the SE leaves a source out."""
    return _median(entry, bold)


def _tolerance() -> str:
    return f"±{round(100 * TOLERANCE)}%"


def _over(entry: dict) -> str:
    models = entry.get("n_models")
    return (f"{entry['n']} parameter{'s' if entry['n'] != 1 else ''}"
            + (f" of {models} model{'s' if models != 1 else ''}" if models else ""))


def _which(headline: dict) -> str:
    return " with a trusted reference" if headline.get("over") == "trusted" else ""


def proxy_sentence(headline: dict) -> str | None:
    proxy = headline.get("proxy")
    if not proxy:
        return None
    share = f"{percent(proxy['share_within'])} of them within {_tolerance()}"
    if _close(proxy):
        return (f"The learned σ is a proxy for the Hessian diagonal: σᵢ ≈ 1/√Hᵢᵢ, the conditional sd of each "
                f"parameter given the others, with σ_SVI / (1/√Hᵢᵢ) at a median {_stat(proxy)} over "
                f"{_over(proxy)}{_which(headline)} ({share}).")
    return (f"The learned σ is not a close proxy for the Hessian diagonal in this run: σ_SVI / (1/√Hᵢᵢ) has "
            f"median {_stat(proxy)} over {_over(proxy)}{_which(headline)} ({share}).")


def misses_sentence(benchmark: dict) -> str | None:
    methods = benchmark.get("methods", {})
    svi, full = methods.get("svi_meanfield"), methods.get("laplace_full")
    if not svi:
        return None
    over = f"over {_over(svi)} with a trusted reference"
    if _close(svi):
        return (f"It misses little of the posterior's marginal sd: σ_SVI / reference sd has median {_stat(svi)} "
                f"{over} ({percent(svi['share_within'])} within {_tolerance()}).")
    direction = "short of" if svi["median"] < 1 else "above"
    gap = abs(1.0 - svi["median"])
    text = (f"a median {percent(gap)} {direction} the reference marginal sd (σ_SVI / reference sd "
            f"{_stat(svi)} {over}, {percent(svi['share_within'])} within {_tolerance()})")
    if full and _close(full) and svi["median"] < 1:
        return (f"It misses the correlations between parameters, and with them {text}, where √(H⁻¹)ᵢᵢ, which "
                f"keeps them, is at {_stat(full, bold=False)}.")
    if full:
        return (f"It misses the posterior's marginal sd by {text}; even √(H⁻¹)ᵢᵢ is at "
                f"{_stat(full, bold=False)}, so part of the gap is the posterior's departure from a Gaussian.")
    return f"It misses the posterior's marginal sd by {text}."


def collapse_sentence(headline: dict) -> str | None:
    collapse = headline.get("collapse")
    if not collapse:
        return None
    steps = f"after {collapse['steps']} steps " if collapse.get("steps") else ""
    falling = ""
    if collapse.get("n_slopes"):
        where = ("every model" if collapse["n_falling"] == collapse["n_slopes"]
                 else f"{collapse['n_falling']} of {collapse['n_slopes']} models")
        falling = (f", still falling in {where} (median slope of log σ {fmt(collapse['median_slope'])} per "
                   "1000 steps)")
    if collapse["median"] < COLLAPSED and collapse.get("n_falling") == collapse.get("n_slopes"):
        return (f"Without the KL term (no prior, no entropy) σ collapses towards 0: {steps}it is a median "
                f"{_stat(collapse)} of σ_SVI over the same {_over(collapse)}{falling}.")
    return (f"Without the KL term (no prior, no entropy) σ did not collapse in this run: {steps}it is a median "
            f"{_stat(collapse)} of σ_SVI over the same {_over(collapse)}{falling}.")


def headline(answer: dict) -> str:
    """The opening of the report and the README: at most three sentences, each number with its SE.

    Parameters
    ----------
    answer : dict
        ``study.report.summary.study_answer(study)``, or ``results.json["answer"]``.
    """
    parts = [proxy_sentence(answer.get("headline", {})), misses_sentence(answer.get("benchmark", {})),
             collapse_sentence(answer.get("headline", {}))]
    parts = [p for p in parts if p]
    return " ".join(parts) if parts else "No model produced the fits needed for an answer."


SE_NOTE = ("In the opening sentences and the benchmark table each ± is the Monte Carlo SE of the median itself, "
           "propagated from every ratio's own error (the seed-to-seed error of σ_SVI, the reference's Monte Carlo "
           "error); in the paragraph above and the per-model table it is the typical SE of one ratio, which the "
           "median of many ratios can only undercut. \\* marks an SE that leaves out a source of error (the "
           "expected-loss run's own noise, a single-seed fit's optimiser noise).")


def particles_text(study) -> str:
    """``"32 particles"``, with the models whose mean-field fits took fewer (``ModelSpec.svi_particles``)."""
    s = study.settings
    fewer: dict[int, list[str]] = {}
    for model in study.models:
        fit = model.fits.get("svi_meanfield")
        used = (fit.info or {}).get("particles") if fit is not None and fit.ok else None
        if isinstance(used, int) and used != s.particles:
            fewer.setdefault(used, []).append(f"`{model.name}`")
    notes = "; ".join(f"{n} on {', '.join(names)}" for n, names in sorted(fewer.items()))
    return f"{s.particles} particles" + (f" ({notes})" if notes else "")

