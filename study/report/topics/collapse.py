"""The collapse curve: loss and log σ against step, for the full ELBO and the expected loss (no prior, no entropy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.core.results import ModelResult
from study.report.document import Image, slug
from study.report.plotting import INV_SQRT_H, plt, robust_limits, save
from study.report.summary import SVI, usable_fit

# Up to this many parameters the collapse curve draws one line per parameter;
# above it, the median and the range over parameters.
PER_PARAMETER_LINES = 6


def collapse_curve(model: ModelResult, answer_for_model: dict, fig_dir: Path) -> Image | None:
    """Loss and log σ against step for the full ELBO and the expected loss, on shared axes.

    The ELBO's σ should level off at 1/√Hᵢᵢ (dashed: the mean-field optimum of a
    Gaussian posterior, hence the analytic value for the conjugate models); the
    expected loss's σ keeps falling.
    """
    svi, collapse = usable_fit(model, SVI), usable_fit(model, "expected_loss")
    if svi is None or collapse is None or svi.trajectory is None or collapse.trajectory is None:
        return None
    diag = usable_fit(model, "laplace_diag")
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


def collapse_answer(study, answer: dict) -> list:
    """The section "Collapse without the entropy term": the claim's pooled statistic, with its population."""
    from study.report.answer import fmt, with_se
    from study.report.document import Heading, Paragraph, Table

    headline = answer.get("headline") or {}
    c = headline.get("collapse")
    if not c:
        return []
    population = "with a trusted reference" if headline.get("over") == "trusted" else "that ran"
    rows = [
        ["median of expected-loss σ / σ_SVI", with_se(c["median"], c.get("median_se"), c.get("se_complete", True))],
        ["10–90% range", f"{fmt(c['q10'])}–{fmt(c['q90'])}"],
        ["steps of the expected-loss run", "–" if not c.get("steps") else f"{c['steps']:,}"],
        ["models whose log σ was still falling at the end", f"{c.get('n_falling', 0)} of {c.get('n_slopes', 0)}"],
        ["median slope of log σ per 1000 steps", fmt(c.get("median_slope"))],
    ]
    text = ("Trained on the expected loss E_ε[−log p(y | μ + σε)] alone (no prior, no entropy), with the mean-field "
            "guide, optimiser and start of the ELBO fit, σ shrinks for as long as it is trained. Each model's section "
            "draws its curve; the KL ablation below, where it ran, says which of the two terms stops the collapse.")
    return [Heading(3, "Collapse without the entropy term", anchor="collapse"), Paragraph(text),
            Table(columns=["statistic", "value"], rows=rows, numeric=False,
                  caption=f"Over {c['n']:,} parameters of the {c.get('n_models', 0)} models {population}. SE: the "
                          "Monte Carlo error of the median, propagated from each ratio's σ_SVI seed-to-seed error; "
                          "\\* the expected-loss run's own noise is left out.")]
