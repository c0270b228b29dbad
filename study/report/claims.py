"""The answer at a glance: three or four numbered claims, a glossary and one figure.

Every claim is one sentence with one headline number and its SE, its population named
once, and a link to the report section that proves it. Every wording is chosen by a
threshold on the numbers of ``study.report.summary.study_answer`` (the ``answer`` dict
that ``results.json`` stores), so the report (from a live run) and the README (from
``results.json``) state the same claims:

1. the mean-field fixed point σᵢ⁻² = E_q[Hᵢᵢ] (``answer["models"][*]["fixed_point"]``);
2. σ against 1/√Hᵢᵢ over the models with a trusted reference (``answer["headline"]["proxy"]``),
   and the networks' σᵢ⁻²/Hᵢᵢ at the guide's mean (``answer["networks"]``);
3. the shortfall law σᵢ/sdᵢ = √(1 − Rᵢ²) (``answer["law"]["pooled"]``) and linear response
   (``answer["benchmark"]["methods"]["svi_meanfield_lr"]``);
4. the collapse without the entropy term (``answer["headline"]["collapse"]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.checks.fixed_point import z_limit
from study.report.answer import fmt
from study.report.summary import TOLERANCE
from study.report.topics.networks import TRACK_FACTOR

# σ has "collapsed" when the expected-loss run's σ ends below this fraction of σ_SVI.
COLLAPSED = 0.1
# A network "tracks" the Hessian diagonal when its median σᵢ⁻²/Hᵢᵢ lies within TRACK_FACTOR of 1
# (the networks section's threshold).

# Where the claims link their terms (the report's glossary; the README links docs/glossary.md).
GLOSSARY_ANCHOR = "glossary"

# Term -> its definition; each claim links the terms it uses on first use.
GLOSSARY = {
    "trusted reference": (
        "the best available sample or formula for the posterior: the analytic posterior, posteriordb's gold draws, "
        "or NUTS whose largest R-hat is at most 1.05 and smallest bulk ESS at least 100. NUTS is skipped above "
        "500 parameters, so the networks have none."),
    "marginal sd": "the posterior sd of one parameter, the others integrated out; for a Gaussian posterior √(H⁻¹)ᵢᵢ.",
    "conditional sd": (
        "the sd of one parameter with all the others held fixed; for a Gaussian posterior 1/√Hᵢᵢ, Hᵢᵢ the diagonal "
        "of the Hessian of −log p(θ, y) at the MAP. It is below the marginal sd whenever parameters are correlated."),
    "fixed point": (
        "at a mean-field optimum every σᵢ⁻² equals E_q[Hᵢᵢ], the Hessian diagonal averaged over the fitted q "
        "(Opper & Archambeau 2009); it holds when no residual rᵢ = σᵢ²·E_q[Hᵢᵢ] − 1 lies beyond its limit, the Šidák bound "
        "over the d parameters at which a default study of 50 fits, all at their fixed points, is flagged in 1% of "
        "runs (4.5 SE at d = 31). "
        "A fit whose residuals are off while σ still moves stopped short of it: it has not settled."),
    "shortfall law": (
        "for a Gaussian posterior with covariance S, σᵢ / sdᵢ = 1/√(Sᵢᵢ (S⁻¹)ᵢᵢ) = √(1 − Rᵢ²), Rᵢ² the share of "
        "the parameter's variance the others explain (Bishop, PRML §10.1.2); \"predicted\" is that value from the "
        "reference's draws."),
    "linear response": (
        "a correction of the mean-field covariance from the ELBO's curvature in (μ, log σ) "
        "(Giordano, Broderick & Jordan 2018)."),
    "expected loss": (
        "E_ε[−log p(y | μ + σε)] alone: the ELBO without its prior and entropy terms; nothing stops σ from shrinking."),
    "SE": (
        "the Monte Carlo standard error of the number it follows. For a median over parameters it is propagated from "
        "each ratio's own error (σ_SVI's seed-to-seed error, the reference's Monte Carlo error; the expected-loss "
        "run's own noise is left out); for the shortfall law it is a bootstrap over models; for a network, 1.2533 × "
        "the sd of the log ratios / √n."),
}


def term_anchor(term: str) -> str:
    return "term-" + re.sub(r"[^a-z0-9]+", "-", term.lower()).strip("-")


@dataclass
class Claim:
    key: str
    text: str  # one sentence, inline Markdown; terms linked as [term](<glossary>#term-...)
    anchor: str  # the report section that proves it
    section: str  # that section's name
    value: float | None  # the headline number
    se: float | None  # its SE


def _se(value: float | None) -> str:
    return "" if value is None else f" ± {fmt(value, 2)}"


def _headline(value: float, se: float | None) -> str:
    return f"**{fmt(value)}{_se(se)}**"


def _over(n: int, models: int, trusted: bool = True) -> str:
    tail = " with a [trusted reference](@trusted reference)" if trusted else ""
    return f"{n:,} parameters of {models} model{'s' if models != 1 else ''}{tail}"


def fixed_point_claim(answer: dict) -> Claim | None:
    checked = [a["fixed_point"] for a in answer["models"].values() if a.get("fixed_point")]
    if not checked:
        return None
    verdicts = [c["verdict"] if not c.get("flagged") else "not converged" for c in checked]
    settled = [v for v in verdicts if v != "not converged"]
    held = sum(v == "fixed point" for v in verdicts)
    short = len(verdicts) - len(settled)
    tail = f"; {short} of {len(verdicts)} stopped short of it" if short else ""
    text = (f"The mean-field [fixed point](@fixed point) σᵢ⁻² = E_q[Hᵢᵢ] holds, no residual beyond its limit (at least "
            f"{z_limit(1):.2g} [SE](@SE)), in **{held} of {len(settled)}** mean-field fits whose σ settled{tail}.")
    return Claim("fixed_point", text, "fixed-point", "Fixed point", float(held), None)


def network_text(networks: dict) -> str:
    """The networks' σᵢ⁻²/Hᵢᵢ at the guide's mean: one network's median, or the range of several."""
    values = [e["median"] for e in networks.values() if e.get("median") is not None and np.isfinite(e["median"])]
    if not values:
        return ""
    off = [v for v in values if not 1 / TRACK_FACTOR <= v <= TRACK_FACTOR]
    number = fmt(values[0]) if len(values) == 1 else f"{fmt(min(values))}–{fmt(max(values))}"
    return (f"; networks {'differ' if off else 'agree'} (median σᵢ⁻²/Hᵢᵢ at the guide's mean "
            f"{number})")


def proxy_claim(answer: dict) -> Claim | None:
    headline = answer.get("headline") or {}
    proxy = headline.get("proxy")
    if not proxy:
        return None
    trusted = headline.get("over") == "trusted"
    ratio = (f"median ratio {_headline(proxy['median'], proxy.get('median_se'))} over "
             f"{_over(proxy['n'], proxy.get('n_models', 0), trusted)}")
    if abs(proxy["median"] - 1.0) <= TOLERANCE:
        text = f"Where the posterior is near-Gaussian σᵢ ≈ 1/√Hᵢᵢ, the [conditional sd](@conditional sd): {ratio}"
    else:
        text = f"σᵢ is not close to 1/√Hᵢᵢ, the [conditional sd](@conditional sd), in this run: {ratio}"
    text += network_text(answer.get("networks") or {}) + "."
    return Claim("proxy", text, "benchmark", "The answer over the benchmark", proxy["median"], proxy.get("median_se"))


def law_claim(answer: dict) -> Claim | None:
    law = (answer.get("law") or {}).get("pooled")
    if not law:
        return None
    number = (f"median measured/predicted {_headline(law['median'], law.get('median_se'))} over "
              f"{_over(law['n'], law['n_models'])}")
    if abs(law["median"] - 1.0) <= TOLERANCE:
        text = (f"σ falls short of the [marginal sd](@marginal sd) by √(1 − Rᵢ²), the "
                f"[shortfall law](@shortfall law): {number}")
    else:
        text = (f"σ's shortfall from the [marginal sd](@marginal sd) misses the [shortfall law](@shortfall law) "
                f"√(1 − Rᵢ²): {number}")
    lr = ((answer.get("benchmark") or {}).get("methods") or {}).get("svi_meanfield_lr")
    if lr:
        verb = "recovers" if abs(lr["median"] - 1.0) <= TOLERANCE else "does not recover"
        text += f"; [linear response](@linear response) {verb} it (median {fmt(lr['median'])})"
    return Claim("law", text + ".", "law", "The law behind the shortfall", law["median"], law.get("median_se"))


def collapse_claim(answer: dict) -> Claim | None:
    headline = answer.get("headline") or {}
    collapse = headline.get("collapse")
    if not collapse:
        return None
    trusted = headline.get("over") == "trusted"
    steps = f"after {collapse['steps']:,} steps on" if collapse.get("steps") else "trained on"
    falling = collapse.get("n_slopes") and collapse["n_falling"] == collapse["n_slopes"]
    number = (f"{steps} the [expected loss](@expected loss), σ is a median "
              f"{_headline(collapse['median'], collapse.get('median_se'))} of σ_SVI over "
              f"{_over(collapse['n'], collapse.get('n_models', 0), trusted)}{', still falling' if falling else ''}")
    if collapse["median"] < COLLAPSED and falling:
        text = f"Without the entropy term σ collapses: {number}."
    else:
        text = f"σ did not collapse without the entropy term: {number}."
    return Claim("collapse", text, "collapse", "Collapse without the entropy term", collapse["median"],
                 collapse.get("median_se"))


def claims(answer: dict) -> list[Claim]:
    """The numbered claims, in order, from ``study_answer``'s dict (those the run has numbers for)."""
    made = [fixed_point_claim(answer), proxy_claim(answer), law_claim(answer), collapse_claim(answer)]
    return [c for c in made if c is not None]


def claim_lines(answer: dict) -> list[str]:
    """The claims as plain numbered lines: what a finished run prints last."""
    made = claims(answer)
    if not made:
        return ["No model of this run produced the fits an answer needs."]
    return [f"{i}. {plain(claim.text)}" for i, claim in enumerate(made, start=1)]


def link_terms(text: str, glossary: str = "") -> str:
    """Resolve ``[term](@term)`` to ``[term](<glossary>#term-...)``; ``glossary`` "" for this page."""
    return re.sub(r"\]\(@([^)]+)\)", lambda m: f"]({glossary}#{term_anchor(m.group(1))})", text)


def plain(text: str) -> str:
    """A claim's words without Markdown (links, bold): what the reader reads."""
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    return text.replace("**", "")


def words(text: str) -> int:
    return len(plain(text).split())


def claim_markdown(claim: Claim, glossary: str = "", section_link: bool = True) -> str:
    """One claim, its terms linked to ``glossary``; with ``section_link`` the link to its section."""
    text = link_terms(claim.text, glossary)
    if section_link:
        text += f" [→ {claim.section}](#{claim.anchor})"
    return text


def glossary_items(anchors: bool = False) -> list[str]:
    """``**term**: definition`` per term (with an HTML anchor per term when ``anchors``)."""
    return [(f'<a id="{term_anchor(term)}"></a>' if anchors else "") + f"**{term}**: {meaning}"
            for term, meaning in GLOSSARY.items()]


def glossary_markdown() -> str:
    """``docs/glossary.md``: the terms the claims use, each with an anchor the README links to."""
    lines = ["# Glossary", "",
             "The terms of the answer's claims (README and report). Generated from "
             "`study/report/claims.py` by `make readme`; do not edit by hand.", ""]
    for term, meaning in GLOSSARY.items():
        lines += [f'<a id="{term_anchor(term)}"></a>**{term}**: {meaning}', ""]
    return "\n".join(lines)


# -- the figure -------------------------------------------------------------------------------


def glance_rows(study, answer: dict) -> list[tuple[str, np.ndarray]]:
    """``(label, ratios)`` per row of the figure, over the models with a trusted reference."""
    from study.report.summary import SVI, benchmark_models, sd_ratios

    models, _ = benchmark_models(study)

    def pooled(numerator, denominator):
        values = [sd_ratios(m, numerator, denominator) for m in models]
        values = [v for v in values if v is not None]
        return np.concatenate(values) if values else None

    law = (answer.get("law") or {}).get("models") or {}
    law_ratios = [np.asarray(e["ratio"], dtype=float) for e in law.values()]
    rows = [
        ("(2) σ_SVI / (1/√Hᵢᵢ)", pooled(SVI, "laplace_diag")),
        ("(3) σ_SVI / reference sd", pooled(SVI, "reference")),
        ("(3) σ_SVI / reference sd\nover predicted √(1 − Rᵢ²)", np.concatenate(law_ratios) if law_ratios else None),
        ("(3) linear response / reference sd", pooled("svi_meanfield_lr", "reference")),
        ("(4) expected-loss σ / σ_SVI", pooled("expected_loss", SVI)),
    ]
    return [(label, v[np.isfinite(v) & (v > 0)]) for label, v in rows if v is not None and np.any(v > 0)]


def glance_figure(study, answer: dict, fig_dir: Path, name: str = "answer.png"):
    """One panel: each claim's ratios as a box and strip on a log axis, the line at 1."""
    from study.report.document import Image
    from study.report.plotting import plain_log_ticks, plt, save
    from study.report.summary import BAND

    rows = glance_rows(study, answer)
    if not rows:
        return None
    rng = np.random.default_rng(0)  # jitter and the subsample of the dots only
    fig, ax = plt.subplots(figsize=(9, 0.75 + 0.5 * len(rows)))
    for k, (label, values) in enumerate(rows):
        y = len(rows) - 1 - k
        colour = f"C{k}"
        ax.boxplot(values, positions=[y], widths=0.5, vert=False, showfliers=False, manage_ticks=False,
                   patch_artist=True, boxprops=dict(facecolor="none", edgecolor=colour),
                   medianprops=dict(color=colour, lw=2.5), whiskerprops=dict(color=colour),
                   capprops=dict(color=colour))
        shown = values if len(values) <= 600 else rng.choice(values, 600, replace=False)
        ax.scatter(shown, y + rng.uniform(-0.18, 0.18, len(shown)), s=6, alpha=0.35, color=colour, lw=0,
                   zorder=3)
    ax.axvline(1.0, color="k", lw=1)
    ax.axvspan(1 / BAND, BAND, color="0.9", zorder=0)
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in reversed(rows)], fontsize=8.5)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("ratio (log scale); one dot per parameter, box: quartiles; (n): the claim", fontsize=8.5)
    ax.grid(axis="x", which="major", color="0.9")
    path = save(fig, Path(fig_dir) / name)
    models = answer.get("benchmark", {}).get("n_models", 0)
    caption = (f"The claims' ratios over every parameter of the {models} model{'s' if models != 1 else ''} with a "
               f"trusted reference; the line marks 1, the band ±{round(100 * (BAND - 1))}%.")
    return Image(path, "The ratios behind claims 2 to 4, one row each", caption)
