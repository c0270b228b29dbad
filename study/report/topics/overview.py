"""The report's opening: the claims and their figure, the question, the glossary, the model index, the
across-models figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.core.results import OK, StudyResult
from study.checks.fixed_point import z_limit
from study.report.answer import QUESTION, fmt, with_se
from study.report.claims import GLOSSARY, GLOSSARY_ANCHOR, claim_markdown, claims, term_anchor
from study.report.document import Heading, Image, Numbered, Paragraph, Table, Terms, slug
from study.report.plotting import (
    INV_SQRT_H, SIGMA_SVI, plain_log_ticks, plt, save, untrusted_reference,
)
from study.report.summary import BAND, MAX_R_HAT, MIN_ESS_BULK, SVI, TOLERANCE, sd_ratios

UNTRUSTED_MARK = "†"


def model_anchor(name: str) -> str:
    return f"model-{slug(name)}"


def titles(study: StudyResult) -> dict[str, str]:
    return {m.name: m.title for m in study.models}


def untrusted(answer_for_model: dict | None) -> dict | None:
    return (answer_for_model or {}).get("reference_untrusted")


def reference_used(model) -> str:
    """What the model's reference actually was: its kind, or ``none`` (with why, when a fit says)."""
    fit = model.fits.get("reference")
    if fit is not None and fit.ok:
        return str(fit.info.get("kind") or model.reference_kind or "reference")
    if fit is not None and fit.status == "skipped" and "skipped above" in fit.reason:
        return "none (skipped for size)"
    if fit is not None:
        return f"none ({fit.status})"
    return "none"


def _verdict(diag: dict | None, ref: dict | None, law: dict | None) -> str:
    """A model's answer in words, each part chosen by ``TOLERANCE`` on a median."""
    parts = []
    if diag:
        parts.append("σ ≈ 1/√Hᵢᵢ" if abs(diag["median"] - 1) <= TOLERANCE else "σ ≠ 1/√Hᵢᵢ")
    if ref:
        if abs(ref["median"] - 1) <= TOLERANCE:
            parts.append("σ ≈ ref sd")
        else:
            parts.append("σ below ref sd" if ref["median"] < 1 else "σ above ref sd")
        if law is not None:
            parts[-1] += (", as predicted" if abs(law["median_ratio"] - 1) <= TOLERANCE else ", not as predicted")
    return "; ".join(parts) or "–"


def _cell(entry: dict | None, mark: str = "") -> str:
    if not entry:
        return "–"
    return with_se(entry["median"], entry.get("median_se"), entry.get("se_complete", True)) + mark


def model_index(study: StudyResult, answer: dict) -> Table:
    """One row per model: the reference used, a verdict, the medians of σ_SVI / (1/√Hᵢᵢ), σ_SVI / ref sd and
    the predicted √(1 − Rᵢ²), the fixed point and the fits' status; each model links to its section.

    Medians ± SE are ``summary.pooled_statistics`` over the model's parameters, as in the benchmark's
    per-model table.
    """
    from study.report.summary import _pool

    law = (answer.get("law") or {}).get("models") or {}
    rows, any_untrusted = [], False
    for model in study.models:
        a = answer["models"].get(model.name, {})
        label = f"[{model.title}](#{model_anchor(model.name)})"
        if model.status != OK:
            rows.append([label, "–", "–", "–", "–", "–", "–", f"{model.status}: {model.reason}"])
            continue
        flag = untrusted(a) is not None
        any_untrusted |= flag
        mark = f" {UNTRUSTED_MARK}" if flag else ""
        diag = _pool([model], SVI, "laplace_diag")
        ref = _pool([model], SVI, "reference")
        fixed = a.get("fixed_point")
        shrink = law.get(model.name)
        bad = [f"`{name}` {fit.status}" for name, fit in model.fits.items() if fit.status in ("failed", "flagged")]
        rows.append([
            label,
            reference_used(model) + (f" (untrusted {UNTRUSTED_MARK})" if flag else ""),
            _verdict(diag, None if flag else ref, shrink),
            _cell(diag),
            _cell(ref, mark),
            fmt(shrink["median_predicted"]) if shrink else "–",
            f"{fixed['verdict']} ({fixed['n_off']} of {fixed['n']} off)" if fixed else "–",
            "ok" if not bad else "; ".join(bad),
        ])
    caption = ("Medians over each model's parameters ± their Monte Carlo SE (propagated from each ratio's own error, "
               "as in the benchmark's per-model table). Verdict: each median within ±"
               f"{round(100 * TOLERANCE)}% of 1 or not; \"as predicted\": σ_SVI / ref sd within ±"
               f"{round(100 * TOLERANCE)}% of the shortfall law's √(1 − Rᵢ²). Fixed point: the verdict of the "
               f"check σᵢ⁻² = E_q[Hᵢᵢ] and how many residuals lie beyond its limit (at least {z_limit(1):.2g} SE). Status: ok, "
               "or the fits that failed or are flagged (the model's section says why; skipped methods are listed "
               "there too).")
    if any_untrusted:
        caption += (f" {UNTRUSTED_MARK} Untrusted NUTS reference (largest R-hat above {MAX_R_HAT} or smallest "
                    f"bulk ESS below {MIN_ESS_BULK}): shown, but left out of every pooled number.")
    return Table(columns=["model", "reference", "verdict", "σ_SVI / (1/√Hᵢᵢ)", "σ_SVI / ref sd",
                          "predicted √(1 − Rᵢ²)", "fixed point", "status"],
                 rows=rows, caption=caption, numeric=False, wrap=True)


def answer_blocks(study: StudyResult, answer: dict, answer_figures: list[Image]) -> list:
    """The first screen (the claims and their figure), then the question, the glossary and the model index.

    ``answer_figures``: the glance figure first (``claims.glance_figure``), then the per-model figures.
    """
    made = claims(answer)
    blocks: list = [Numbered([claim_markdown(c) for c in made], anchor="answer") if made
                    else Paragraph("No model produced the fits needed for an answer.")]
    blocks.extend(answer_figures[:1])
    blocks += [
        Heading(2, "The question", anchor="question"), Paragraph(QUESTION),
        Heading(2, "Glossary", anchor=GLOSSARY_ANCHOR),
        Terms([[term_anchor(term), term, meaning] for term, meaning in GLOSSARY.items()]),
        Heading(2, "Model index", anchor="model-index"), model_index(study, answer),
    ]
    blocks.extend(answer_figures[1:])
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
