"""The answer's overview: the per-model table of the headline ratios and the across-models figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.core.results import OK, StudyResult
from study.report.answer import QUESTION, SE_NOTE, answer_paragraph, fmt, headline, ratio_cell
from study.report.document import Heading, Image, Paragraph, Table, slug
from study.report.plotting import (
    INV_SQRT_H, SIGMA_SVI, plain_log_ticks, plt, save, untrusted_reference,
)
from study.report.summary import BAND, MAX_R_HAT, MIN_ESS_BULK, SVI, sd_ratios

UNTRUSTED_MARK = "†"


def model_anchor(name: str) -> str:
    return f"model-{slug(name)}"


def titles(study: StudyResult) -> dict[str, str]:
    return {m.name: m.title for m in study.models}


def untrusted(answer_for_model: dict | None) -> dict | None:
    return (answer_for_model or {}).get("reference_untrusted")


def answer_table(study_or_models, answer: dict, links: bool = True) -> Table:
    """Per model: the medians of the answer's ratios (worst parameter in brackets).

    ``study_or_models`` is a ``StudyResult`` or a list of ``(name, title, status, reason,
    reference_kind)`` tuples (what ``results.json`` holds).
    """
    if isinstance(study_or_models, StudyResult):
        models = [(m.name, m.title, m.status, m.reason, m.reference_kind) for m in study_or_models.models]
    else:
        models = list(study_or_models)
    rows, any_untrusted = [], False
    for name, title, status, reason, reference_kind in models:
        a = answer["models"].get(name, {})
        flag = untrusted(a) is not None
        any_untrusted |= flag

        def cell(key, marked=False):
            entry = a.get(key)
            if not entry:
                return "–"
            text = ratio_cell(entry)
            return f"{text} {UNTRUSTED_MARK}" if marked and flag else text

        label = f"[{title}](#{model_anchor(name)})" if links else title
        if status != OK:
            rows.append([label, "–", status, reason, "", "", ""])
            continue
        collapse = a.get("expected_loss", {})
        fall = collapse.get("final_sigma_over_svi")
        rows.append([
            label,
            (reference_kind or "–") + (f" (untrusted {UNTRUSTED_MARK})" if flag else ""),
            cell("svi_over_laplace_diag"),
            cell("svi_over_reference", marked=True),
            cell("laplace_full_over_reference", marked=True),
            fmt(fall["median"]) if fall else "–",
            fmt(collapse.get("median_log_sigma_slope_per_1000_steps")),
        ])
    caption = ("Median over parameters ± its typical Monte Carlo SE (worst parameter ± SE in brackets: farthest "
               "from 1). SE: the seed-to-seed error of σ_SVI and the reference's Monte Carlo error (ArviZ mcse of "
               "the sd); exact Laplace and analytic sds have none. The last two columns: the expected-loss run's "
               "final σ over the ELBO's σ, and its trend (a run that has not converged, so no SE).")
    if any_untrusted:
        caption += (f" {UNTRUSTED_MARK} Untrusted NUTS reference (largest R-hat above {MAX_R_HAT} or smallest "
                    f"bulk ESS below {MIN_ESS_BULK}): shown, but left out of the pooled numbers.")
    return Table(
        columns=["model", "reference", "σ_SVI / 1/√Hᵢᵢ", "σ_SVI / ref sd", "√(H⁻¹)ᵢᵢ / ref sd",
                 "expected-loss σ / σ_SVI", "log σ slope /1000 steps"],
        rows=rows,
        caption=caption,
    )


def answer_blocks(study: StudyResult, answer: dict, answer_figures: list[Image]) -> list:
    """The answer section: the three-sentence answer, the question, the detailed paragraph, the
    across-models figure, the per-model table."""
    blocks: list = [Heading(2, "The answer", anchor="answer"), Paragraph(headline(answer)),
                    Paragraph(f"*{QUESTION}*")]
    blocks.append(Paragraph(answer_paragraph(answer, titles(study))))
    blocks.append(Paragraph(f"*{SE_NOTE}*"))
    blocks.extend(answer_figures)
    blocks.append(answer_table(study, answer))
    return blocks


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
