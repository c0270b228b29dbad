"""The report: the answer first, then one section per model. A function of the results only."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .document import (
    Bullets, Code, Details, Heading, Image, Paragraph, Section, Table, slug, to_html, to_markdown,
)
from .idata import summary as az_summary
from .methods import METHODS
from .results import OK, ModelResult
from .runner import StudyResult
from .summary import SVI, sd_ratios

TITLE = "Is the mean-field σ a proxy for the Hessian diagonal?"
QUESTION = (
    "Put a Gaussian N(μᵢ, σᵢ²) over every parameter, learn μ and σ with the reparameterisation "
    "trick: is the learned σ a proxy for the diagonal of the Hessian? And what does it say about "
    "the posterior's real uncertainty? Trained without any prior/entropy term, σ collapses to 0."
)


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    x = float(x)
    if not np.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def model_anchor(name: str) -> str:
    return f"model-{slug(name)}"


# -- the answer -----------------------------------------------------------------------------


def answer_paragraph(study: StudyResult, answer: dict) -> str:
    pooled = answer["pooled"]
    parts = []
    n_models = sum(1 for m in study.models if m.status == OK and m.fits.get(SVI) and m.fits[SVI].ok)
    diag = pooled.get("svi_over_laplace_diag")
    if diag:
        parts.append(
            f"Over {n_models} models ({diag['n']} parameters), the converged mean-field σ divided by "
            f"1/√Hᵢᵢ at the MAP (diagonal Laplace) has median **{fmt(diag['median'])}** "
            f"(range {fmt(diag['min'])}–{fmt(diag['max'])}; farthest from 1: {fmt(diag['worst'])}, "
            f"`{diag['worst_parameter']}`). So yes: σ tracks the inverse square root of the Hessian "
            "diagonal, the *conditional* sd of each parameter given all the others, as the mean-field "
            "fixed point σᵢ⁻² = E_q[Hᵢᵢ] says (Opper & Archambeau 2009)."
        )
    ref = pooled.get("svi_over_reference")
    full = pooled.get("laplace_full_over_reference")
    if ref:
        text = (
            f"It is not the posterior's uncertainty: against the reference marginal sd the ratio has "
            f"median **{fmt(ref['median'])}** (range {fmt(ref['min'])}–{fmt(ref['max'])}; worst "
            f"{fmt(ref['worst'])}, `{ref['worst_parameter']}`), below 1 wherever parameters are "
            "correlated (Bishop, PRML §10.1.2)"
        )
        if full:
            text += (
                f", while the full Laplace √(H⁻¹)ᵢᵢ has median {fmt(full['median'])} "
                f"(range {fmt(full['min'])}–{fmt(full['max'])})"
            )
        parts.append(text + ".")
    collapse = pooled.get("expected_loss_final_sigma_over_svi_median")
    if collapse:
        slopes = [a["expected_loss"].get("median_log_sigma_slope_per_1000_steps")
                  for a in answer["models"].values() if "expected_loss" in a]
        slopes = [s for s in slopes if s is not None]
        parts.append(
            f"Trained on the expected loss alone (no prior, no entropy), σ ended at a median "
            f"**{fmt(collapse['median'])}** of the ELBO's σ (largest per-model median {fmt(collapse['max'])}, "
            f"{collapse['n_models']} models), and log σ was still falling at the end "
            f"(median slope {fmt(float(np.median(slopes)) if slopes else None)} per 1000 steps)."
        )
    return " ".join(parts) if parts else "No model produced the fits needed for an answer."


def answer_table(study: StudyResult, answer: dict) -> Table:
    rows = []
    for model in study.models:
        a = answer["models"].get(model.name, {})

        def cell(key):
            entry = a.get(key)
            return f"{fmt(entry['median'])} ({fmt(entry['worst'])})" if entry else "–"

        collapse = a.get("expected_loss", {})
        fall = collapse.get("final_sigma_over_svi")
        rows.append([
            f"[{model.title}](#{model_anchor(model.name)})",
            model.reference_kind or "–",
            cell("svi_over_laplace_diag"),
            cell("svi_over_reference"),
            cell("laplace_full_over_reference"),
            fmt(fall["median"]) if fall else "–",
            fmt(collapse.get("median_log_sigma_slope_per_1000_steps")),
        ] if model.status == OK else [model.title, "–", model.status, model.reason, "", "", ""])
    return Table(
        columns=["model", "reference", "σ_SVI / 1/√Hᵢᵢ", "σ_SVI / ref sd", "√(H⁻¹)ᵢᵢ / ref sd",
                 "expected-loss σ / σ_SVI", "log σ slope /1000 steps"],
        rows=rows,
        caption="Median over parameters (worst parameter in brackets: farthest from 1). "
        "The last two columns: the expected-loss run's final σ over the ELBO's σ, and its trend.",
    )


# -- one model ------------------------------------------------------------------------------


def description_blocks(text: str) -> list:
    """A model docstring: paragraphs plus fenced pseudo-code."""
    blocks = []
    for i, chunk in enumerate(re.split(r"```[a-z]*\n?", text)):
        chunk = chunk.strip("\n")
        if not chunk.strip():
            continue
        if i % 2 == 1:
            blocks.append(Code(chunk))
        else:
            blocks.extend(Paragraph(" ".join(p.split())) for p in re.split(r"\n\s*\n", chunk) if p.strip())
    return blocks


def sigma_table(model: ModelResult) -> Table:
    methods = [m for m in METHODS if m in model.fits and model.fits[m].ok]
    ref = model.reference
    diag_ratio = sd_ratios(model, SVI, "laplace_diag")
    ref_ratio = sd_ratios(model, SVI, "reference")
    columns = ["parameter"] + [f"sd {m}" for m in methods]
    if diag_ratio is not None:
        columns.append("σ_SVI / 1/√Hᵢᵢ")
    if ref_ratio is not None:
        columns.append("σ_SVI / ref sd")
    rows = []
    for i, name in enumerate(model.param_names):
        row = [name] + [fmt(model.fits[m].sd[i]) for m in methods]
        if diag_ratio is not None:
            row.append(fmt(diag_ratio[i]))
        if ref_ratio is not None:
            row.append(fmt(ref_ratio[i]))
        rows.append(row)
    caption = "Marginal sd of each parameter in unconstrained space, per method"
    if ref is not None:
        caption += f"; reference: {model.reference_kind}"
    return Table(columns=columns, rows=rows, caption=caption + ".")


def diagnostics(model: ModelResult) -> list[str]:
    items = []
    svi = model.fits.get(SVI)
    if svi is not None and svi.ok:
        i = svi.info
        items.append(
            f"`svi_meanfield`: {i['steps']} steps × {i['particles']} particles from the {i.get('init', '?')}, "
            f"σ averaged over the last {i['averaged_over_last_steps']} steps; largest relative change of σ "
            f"between the halves of that window {fmt(i['sigma_drift'])}; ELBO {fmt(i['final_elbo'], 6)} "
            f"± {fmt(i['final_elbo_se'])}; {fmt(i['wall_seconds'])} s."
        )
    collapse = model.fits.get("expected_loss")
    if collapse is not None and collapse.ok:
        i = collapse.info
        items.append(
            f"`expected_loss`: {i['steps']} steps; median slope of log σ over the last half "
            f"{fmt(i['median_log_sigma_slope_per_1000_steps'])} per 1000 steps; {fmt(i['wall_seconds'])} s."
        )
    lap = model.fits.get("laplace_full") or model.fits.get("laplace_diag")
    if lap is not None and lap.ok:
        i = lap.info
        items.append(
            f"Hessian at the MAP: smallest eigenvalue {fmt(i['hessian_min_eigenvalue'])}, condition number "
            f"{fmt(i['hessian_condition_number'])}; gradient norm at the MAP {fmt(i['map_grad_norm'])}; "
            f"{fmt(i['wall_seconds'])} s."
        )
    ref = model.fits.get("reference")
    if ref is not None and ref.ok and ref.info.get("kind") == "NUTS":
        i = ref.info
        items.append(
            f"NUTS reference: {i['chains']} chains × {i['draws_per_chain']} draws after {i['warmup']} warm-up, "
            f"preconditioned by {i['preconditioner']}; smallest bulk ESS {fmt(i['min_ess_bulk'])}, "
            f"largest R-hat {fmt(i['max_r_hat'], 4)}, {i['divergences']} divergences; {fmt(i['wall_seconds'])} s."
        )
    elif ref is not None and ref.ok:
        items.append(f"Reference: {ref.info.get('kind')}" + (f", {ref.info['n_draws']} draws." if "n_draws" in ref.info else "."))
    for name, fit in model.fits.items():
        if not fit.ok:
            items.append(f"`{name}` {fit.status}: {fit.reason}")
    return items


def summary_tables(model: ModelResult) -> list:
    blocks = []
    for method in METHODS:
        fit = model.fits.get(method)
        if fit is None or not fit.ok or fit.draws is None:
            continue
        frame = az_summary(model, fit)
        columns = ["parameter"] + list(frame.columns)
        rows = [[str(index)] + [fmt(v) for v in row] for index, row in zip(frame.index, frame.to_numpy())]
        blocks.append(Details(f"az.summary: {method}", [Table(columns=columns, rows=rows)]))
    return blocks


def model_section(model: ModelResult, figures: list[Image], extra: list = ()) -> Section:
    blocks: list = [Heading(2, model.title, anchor=model_anchor(model.name))]
    blocks.append(Paragraph(f"Model `{model.name}`."))
    if model.status != OK:
        blocks.append(Paragraph(f"**{model.status}**: {model.reason}"))
        return Section(model_anchor(model.name) + "-section", blocks)
    blocks.extend(description_blocks(model.description))
    if model.notes:
        blocks.append(Bullets(model.notes))
    blocks.append(Heading(3, "σ per parameter"))
    blocks.append(sigma_table(model))
    blocks.extend(figures)
    blocks.extend(extra)  # issue 4: fixed point, KL ablation, guide families, data size
    blocks.append(Heading(3, "Diagnostics"))
    blocks.append(Bullets(diagnostics(model)))
    blocks.append(Heading(3, "ArviZ summaries"))
    blocks.extend(summary_tables(model))
    return Section(model_anchor(model.name) + "-section", blocks)


# -- the whole report -------------------------------------------------------------------------


def methods_list() -> Bullets:
    return Bullets([f"`{m.name}`: {m.summary}" for m in METHODS.values()])


def footer(study: StudyResult) -> list:
    s = study.settings
    versions = ", ".join(f"{k} {v}" for k, v in study.versions.items())
    wall = ", ".join(f"{m.name} {fmt(getattr(m, 'wall_seconds', 0.0))} s" for m in study.models)
    return [
        Paragraph(f"Command: `{study.command}`" if study.command else "Command: (in-process)"),
        Paragraph(
            f"Seed {s.seed}; {'quick' if s.quick else 'full'} settings: {s.svi_steps} SVI steps × {s.particles} "
            f"particles, learning rate {s.lr_start} → {s.lr_end} (expected loss: constant {s.collapse_lr}), "
            f"NUTS {s.nuts_chains} × ({s.nuts_warmup} warm-up + {s.nuts_draws}) draws."
        ),
        Paragraph(f"Versions: {versions}."),
        Paragraph(f"Wall time: {fmt(study.wall_seconds)} s in all; per model: {wall}."),
    ]


def build(study: StudyResult, answer: dict, figures: dict[str, list[Image]] | None = None,
          answer_figures: list[Image] | None = None, fig_dir: Path | None = None) -> tuple[list, list]:
    """The report's blocks and its footer (the analysis blocks and their figures need ``fig_dir``)."""
    from . import analysis_report  # issue 4

    figures = figures or {}
    blocks: list = [Heading(1, TITLE), Heading(2, "The answer", anchor="answer"), Paragraph(QUESTION)]
    blocks.append(Paragraph(answer_paragraph(study, answer)))
    blocks.extend(answer_figures or [])
    blocks.append(answer_table(study, answer))
    if fig_dir is not None:  # issue 4
        blocks.extend(analysis_report.answer_blocks(study, answer, fig_dir))
    blocks.append(Heading(3, "Methods"))
    blocks.append(methods_list())
    blocks.append(
        Paragraph(
            "All sds are of the unconstrained coordinates the guide lives in (a positive parameter "
            "appears as `name (log)`). `comparison.csv` holds every number; `idata/<model>/<method>.nc` "
            "the draws."
        )
    )
    for model in study.models:
        extra = analysis_report.model_blocks(model, fig_dir) if fig_dir is not None else []  # issue 4
        blocks.append(model_section(model, figures.get(model.name, []), extra))
    return blocks, footer(study)


def render(study: StudyResult, answer: dict, out_dir: Path, figures=None, answer_figures=None) -> tuple[str, str]:
    """``(markdown, html)`` of the report; images are linked relative to ``out_dir``."""
    blocks, foot = build(study, answer, figures, answer_figures, fig_dir=Path(out_dir) / "figures")
    markdown = to_markdown(blocks + [Heading(2, "Run")] + foot, out_dir)
    page = to_html(blocks, TITLE, footer=foot)
    return markdown, page
