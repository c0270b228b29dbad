"""Numbers in words: the formatting every topic shares, and the three-sentence ``headline``.

Every wording is picked by a threshold on the numbers of ``study.summary.study_answer``
(the ``answer`` dict that ``results.json`` stores), never written as fixed prose. The
report's and README's opening claims are ``study.report.claims``.
"""

from __future__ import annotations

import math

from study.report.summary import BAND, TOLERANCE

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

# A sentence names at most this many models; longer lists go in a table.
MAX_NAMED = 3


def named_or_counted(names: list[str], noun: str = "models", where: str = "the table") -> str:
    """``a, b and c`` for up to ``MAX_NAMED`` names, else ``"12 models (see the table)"``."""
    if len(names) <= MAX_NAMED:
        return _listing(names)
    return f"{len(names)} {noun} (see {where})"


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


def particles_text(study) -> str:
    """``"32 particles"``, with the models whose mean-field fits took fewer (``ModelSpec.svi_particles``)."""
    s = study.settings
    fewer: dict[int, list[str]] = {}
    for model in study.models:
        fit = model.fits.get("svi_meanfield")
        used = (fit.info or {}).get("particles") if fit is not None and fit.ok else None
        if isinstance(used, int) and used != s.particles:
            fewer.setdefault(used, []).append(f"`{model.name}`")
    # Named up to three models in all; past that, counted (each model's diagnostics give its particles).
    named = sum(len(names) for names in fewer.values()) <= 3
    notes = "; ".join(f"{n} on {', '.join(names) if named else f'{len(names)} models'}"
                      for n, names in sorted(fewer.items()))
    return f"{s.particles} particles" + (f" ({notes})" if notes else "")

