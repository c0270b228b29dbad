"""The report: the answer first, then one section per model, then the run. A function of the results only.

``build`` assembles blocks (``study.report.document``) that render to Markdown and to one
self-contained HTML page. More content plugs in through two lists of
contributors, called in order:

- ``ANSWER_BLOCKS``: ``f(study, answer) -> list of blocks``, placed in the answer
  section after the per-model table;
- ``MODEL_BLOCKS``: ``f(model, answer_for_model) -> list of blocks``, placed in each
  model's section after its diagnostics.

``build`` also takes extra contributors per call (``answer_blocks=``, ``model_blocks=``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from study.report.answer import QUESTION, fmt, particles_text, percent
from study.report.document import (
    Bullets, Code, Details, Heading, Image, Paragraph, Section, Table, to_html, to_markdown,
)
from study.report.figure_cache import FigureCache, figure_key, study_inputs
from study.report.idata import summary as az_summary
from study.methods import METHODS
from study.core.results import OK, ModelResult, StudyResult
from study.report.summary import BAND, SVI, sd_ratios, shown_parameters
from study.report.topics.ablation import ablation_answer, ablation_blocks
from study.report.topics.benchmark import benchmark_answer_blocks
from study.report.claims import glance_figure
from study.report.topics.collapse import collapse_answer, collapse_curve
from study.report.topics.curvature import sigma_vs_curvature
from study.report.topics.fixed_point import fixed_point_answer, fixed_point_blocks
from study.report.topics.guides import guides_blocks, recovery_answer
from study.report.topics.intervals import method_intervals
from study.report.topics.law import law_answer_blocks
from study.report.topics.networks import networks_answer
from study.report.topics.overview import UNTRUSTED_MARK, across_models, answer_blocks, model_anchor, untrusted
from study.report.topics.sweep import sweep_answer, sweep_blocks

TITLE = "Is the mean-field σ a proxy for the Hessian diagonal?"
__all__ = ["TITLE", "QUESTION", "fmt", "build", "render", "ANSWER_BLOCKS", "MODEL_BLOCKS"]


# -- the answer -----------------------------------------------------------------------------


# -- one model ------------------------------------------------------------------------------


def description_blocks(text: str) -> list:
    """A model docstring: paragraphs plus fenced or indented pseudo-code."""
    text = re.sub(r"``([^`\n]+)``", r"`\1`", text)  # reStructuredText literals -> Markdown code
    blocks = []
    for i, chunk in enumerate(re.split(r"```[a-z]*\n?", text)):
        chunk = chunk.strip("\n")
        if not chunk.strip():
            continue
        if i % 2 == 1:
            blocks.append(Code(chunk))
            continue
        for part in re.split(r"\n\s*\n", chunk):
            if not part.strip():
                continue
            lines = part.split("\n")
            if all(line.startswith("    ") or not line.strip() for line in lines):
                blocks.append(Code("\n".join(line[4:] for line in lines)))
            else:
                blocks.append(Paragraph(" ".join(part.split())))
    return blocks


def ratio_summary(model: ModelResult, answer_for_model: dict) -> Bullets | None:
    """One line per comparison: median, range and share within ``BAND`` of 1."""
    labels = {
        "svi_over_laplace_diag": "σ_SVI / (1/√Hᵢᵢ)",
        "svi_over_laplace_full": "σ_SVI / √(H⁻¹)ᵢᵢ",
        "svi_over_reference": "σ_SVI / reference sd",
        "laplace_diag_over_reference": "1/√Hᵢᵢ / reference sd",
        "laplace_full_over_reference": "√(H⁻¹)ᵢᵢ / reference sd",
    }
    items = []
    flag = untrusted(answer_for_model) is not None
    for key, label in labels.items():
        e = answer_for_model.get(key)
        if not e:
            continue
        text = (f"{label}: median {fmt(e['median'])}, range {fmt(e['min'])}–{fmt(e['max'])}, "
                f"{percent(e['share_within_band'])} of parameters within {round(100 * (BAND - 1))}% of 1; "
                f"farthest from 1: `{e['worst_parameter']}` ({fmt(e['worst'])})")
        if flag and "reference" in key:
            text += f" {UNTRUSTED_MARK} untrusted reference"
        items.append(text)
    collapse = answer_for_model.get("expected_loss", {})
    if collapse.get("final_sigma_over_svi"):
        e = collapse["final_sigma_over_svi"]
        items.append(
            f"expected-loss σ / σ_SVI after {collapse.get('steps')} steps: median {fmt(e['median'])} "
            f"(largest {fmt(e['max'])}); log σ slope {fmt(collapse.get('median_log_sigma_slope_per_1000_steps'))} "
            "per 1000 steps"
        )
    return Bullets(items) if items else None


def sigma_table(model: ModelResult, answer_for_model: dict | None = None) -> Table:
    methods = [m for m in list(METHODS) + [m for m in model.fits if m not in METHODS]
               if m in model.fits and model.fits[m].ok]
    ref = model.reference
    flag = untrusted(answer_for_model) is not None
    mark = f" {UNTRUSTED_MARK}" if flag else ""
    diag_ratio = sd_ratios(model, SVI, "laplace_diag")
    ref_ratio = sd_ratios(model, SVI, "reference")
    columns = ["parameter"] + [f"sd {m}" + (mark if m == "reference" else "") for m in methods]
    if diag_ratio is not None:
        columns.append("σ_SVI / 1/√Hᵢᵢ")
    if ref_ratio is not None:
        columns.append("σ_SVI / ref sd" + mark)
    rows = []
    shown, subset = shown_parameters(model)
    for i in shown:
        name = model.param_names[i]
        row = [name] + [fmt(model.fits[m].sd[i]) for m in methods]
        if diag_ratio is not None:
            row.append(fmt(diag_ratio[i]))
        if ref_ratio is not None:
            row.append(fmt(ref_ratio[i]))
        rows.append(row)
    caption = "Marginal sd of each parameter in unconstrained space, per method"
    if ref is not None:
        caption += f"; reference: {model.reference_kind}"
    if flag:
        caption += f" ({UNTRUSTED_MARK} untrusted: {untrusted(answer_for_model)['reason']})"
    if subset:
        caption += f". Of the model's {subset[:-1]}"
    return Table(columns=columns, rows=rows, caption=caption + ".")


def diagnostics(model: ModelResult) -> list[str]:
    items = []
    svi = model.fits.get(SVI)
    if svi is not None and svi.ok:
        i = svi.info
        items.append(
            f"`svi_meanfield`: {i['steps']} steps × {i['particles']} particles from the {i.get('init', '?')}"
            f"{', σ from the ' + i['sigma_start'] if i.get('sigma_start') else ''}, "
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
        if fit.status != OK:  # failed, skipped, or kept but flagged
            items.append(f"`{name}` {fit.status}: {fit.reason}")
    return items


def _shown_only(model: ModelResult, fit, shown):
    """``model`` and ``fit`` cut down to the parameters ``shown`` (one scalar site each)."""
    from dataclasses import replace

    names = [model.param_names[i] for i in shown]
    small = replace(model, param_names=names, layout=[(name, k, ()) for k, name in enumerate(names)])
    return small, replace(fit, param_names=names, draws=np.asarray(fit.draws)[..., shown])


def summary_tables(model: ModelResult) -> list:
    blocks = []
    shown, subset = shown_parameters(model)
    for method in list(METHODS) + [m for m in model.fits if m not in METHODS]:
        fit = model.fits.get(method)
        if fit is None or not fit.ok or fit.draws is None:
            continue
        frame = az_summary(*(_shown_only(model, fit, shown) if subset else (model, fit)))
        columns = ["parameter"] + list(frame.columns)
        rows = [[str(index)] + [fmt(v) for v in row] for index, row in zip(frame.index, frame.to_numpy())]
        blocks.append(Details(f"az.summary: {method}", [Table(columns=columns, rows=rows)]))
    return blocks


def model_section(model: ModelResult, figures: list[Image], answer_for_model: dict | None = None,
                  extra: list[Callable] = (), cache: FigureCache | None = None) -> Section:
    answer_for_model = answer_for_model or {}
    blocks: list = [Heading(2, model.title, anchor=model_anchor(model.name))]
    blocks.append(Paragraph(f"Model `{model.name}`."))
    if model.status != OK:
        blocks.append(Paragraph(f"**{model.status}**: {model.reason}"))
        return Section(model_anchor(model.name) + "-section", blocks)
    blocks.extend(description_blocks(model.description))
    if model.notes:
        blocks.append(Bullets(model.notes))
    bad = untrusted(answer_for_model)
    if bad is not None:
        blocks.append(Paragraph(
            f"**Untrusted reference** {UNTRUSTED_MARK}: the NUTS run failed its mixing checks ({bad['reason']}). "
            "Its numbers are shown but left out of every pooled number against the reference."
        ))
    summary = ratio_summary(model, answer_for_model)
    if summary is not None:
        blocks.append(Heading(3, "In numbers"))
        blocks.append(summary)
    blocks.append(Heading(3, "σ per parameter"))
    subset = shown_parameters(model)[1]
    if subset:
        blocks.append(Paragraph(f"This model has {subset}"))
    blocks.append(sigma_table(model, answer_for_model))
    if figures:
        blocks.append(Heading(3, "Figures"))
        blocks.extend(figures)
    for contribute in extra:  # fixed point, KL ablation, guide families, data size
        blocks.extend(contribute(model, answer_for_model) or [])
    blocks.append(Heading(3, "Diagnostics"))
    blocks.append(Bullets(diagnostics(model)))
    tables = summary_tables(model) if cache is None else cached_summary_tables(model, answer_for_model, cache)
    if tables:
        blocks.append(Heading(3, "ArviZ summaries"))
        blocks.extend(tables)
    return Section(model_anchor(model.name) + "-section", blocks)


# -- figures and the detailed analyses ---------------------------------------------------------


MODEL_FIGURES: list[Callable[[ModelResult, dict, Path], Image | list[Image] | None]] = [
    collapse_curve,
    sigma_vs_curvature,
    method_intervals,
]


# The first is the figure of the report's first screen (the claims' ratios).
ANSWER_FIGURES: list[Callable[[StudyResult, dict, Path], Image | list[Image] | None]] = [glance_figure, across_models]


def _images(result) -> list[Image]:
    if result is None:
        return []
    return [result] if isinstance(result, Image) else [im for im in result if im is not None]


def make_all(
    study: StudyResult,
    answer: dict,
    fig_dir: Path,
    model_figures: list[Callable] | None = None,
    answer_figures: list[Callable] | None = None,
    cache: FigureCache | None = None,
) -> tuple[dict[str, list[Image]], list[Image]]:
    """Every figure; returns per-model figures (by model name) and the across-models figures.

    ``model_figures`` / ``answer_figures`` default to ``MODEL_FIGURES`` / ``ANSWER_FIGURES``.
    A warm run reads unchanged figures back (``study.report.figure_cache``); pass the
    run's ``cache`` to share it with ``render`` (the caller then saves it), or none to
    use and save one of this folder's own.
    """
    fig_dir = Path(fig_dir)
    own = cache is None
    cache = FigureCache(fig_dir) if own else cache
    functions = MODEL_FIGURES if model_figures is None else model_figures
    per_model = {model.name: cached_model_figures(model, answer["models"].get(model.name, {}), fig_dir, cache, functions)
                 for model in study.models if model.status == OK}
    across = []
    for make in ANSWER_FIGURES if answer_figures is None else answer_figures:
        key = figure_key(_function_name(make), _study_key(study, answer, cache), cache.code)
        across.extend(cache.blocks(key, lambda make=make: _images(make(study, answer, fig_dir))))
    if own:
        cache.save()
    return per_model, across


def _function_name(make: Callable) -> str:
    return f"{make.__module__}.{make.__qualname__}"


def _model_key(name: str, model: ModelResult, answer_for_model: dict, cache: FigureCache) -> str:
    return figure_key(name, cache.inputs_of(model, answer_for_model), cache.code)


def cached_model_figures(model: ModelResult, answer_for_model: dict, fig_dir: Path, cache: FigureCache,
                         functions: list[Callable]) -> list[Image]:
    """One model's figures, each function's read back from ``cache`` when unchanged."""
    images = []
    for make in functions:
        key = _model_key(_function_name(make), model, answer_for_model, cache)
        made = cache.get(key)
        if made is None:
            made = _images(make(model, answer_for_model, fig_dir))
            cache.put(key, made)
        images.extend(made)
    return images


def cached_summary_tables(model: ModelResult, answer_for_model: dict, cache: FigureCache) -> list:
    return cache.blocks(_model_key("summary_tables", model, answer_for_model, cache), lambda: summary_tables(model))


def model_keys(model: ModelResult, answer_for_model: dict, cache: FigureCache) -> list[str]:
    """Every cache key one model's section reads: its figures, analysis blocks and az.summary tables."""
    names = [_function_name(make) for make in MODEL_FIGURES] + ["detail_model_blocks", "summary_tables"]
    return [_model_key(name, model, answer_for_model, cache) for name in names]


def model_artifacts(model: ModelResult, answer_for_model: dict, fig_dir: Path, reuse: bool = False) -> dict:
    """Draw one model's figures, analysis blocks and az.summary tables; their cache entries.

    Runs in a worker process (``prefill``, or the fit worker: ``study.report.write.draw_model_section``):
    the files land in ``fig_dir`` and the entries go back to the parent's cache, where
    ``make_all`` and ``build`` read them as a warm run would. ``reuse`` reads back what the
    folder's cache already holds for this model instead of drawing it again.
    """
    cache = FigureCache(fig_dir)
    if not reuse:
        cache.stored = {}
    cached_model_figures(model, answer_for_model, fig_dir, cache, MODEL_FIGURES)
    detail_model_blocks(model, fig_dir, cache, answer_for_model)
    cached_summary_tables(model, answer_for_model, cache)
    return cache.used


def prefill(study: StudyResult, answer: dict, fig_dir: Path, cache: FigureCache, workers: int) -> int:
    """Draw the models whose sections the cache does not hold in ``workers`` processes.

    Drawing is most of a cold report's time and each model's section depends on that model
    alone, so models are drawn in parallel; what they produce is the same as drawing them
    one by one here (the same functions, keys and files). Returns the models drawn there.
    """
    missing = [m for m in study.models if m.status == OK
               and not all(cache.has(k) for k in model_keys(m, answer["models"].get(m.name, {}), cache))]
    if workers <= 1 or len(missing) < 2:
        return 0
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=min(workers, len(missing)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(model_artifacts, m, answer["models"].get(m.name, {}), Path(fig_dir)) for m in missing]
        for future in futures:
            cache.stored.update(future.result())
    return len(missing)


def _study_key(study: StudyResult, answer: dict, cache: FigureCache) -> str:
    inputs = {m.name: cache.inputs_of(m, answer["models"].get(m.name, {})) for m in study.models}
    return study_inputs(inputs, answer, study.settings.as_dict(), study.methods)


def detail_answer_blocks(study, answer: dict, fig_dir: Path, cache: FigureCache | None = None) -> list:
    """Blocks for the answer section: fixed point, collapse, KL ablation, recovery of the marginal sd, the shortfall law
    and the parameterisation, data size, networks."""
    fig_dir = Path(fig_dir)

    def make():
        return (fixed_point_answer(study, answer) + collapse_answer(study, answer) + ablation_answer(study, answer)
                + recovery_answer(study, answer)
                + law_answer_blocks(study, answer, fig_dir) + sweep_answer(study, answer, fig_dir)
                + networks_answer(study, answer, fig_dir))

    if cache is None:
        return make()
    return cache.blocks(figure_key("detail_answer_blocks", _study_key(study, answer, cache), cache.code), make)


def detail_model_blocks(model: ModelResult, fig_dir: Path, cache: FigureCache | None = None,
                        answer_for_model: dict | None = None) -> list:
    """Blocks for one model's section."""
    if model.status != OK:
        return []
    fig_dir = Path(fig_dir)

    def make():
        return (fixed_point_blocks(model, fig_dir) + ablation_blocks(model, fig_dir) + guides_blocks(model, fig_dir)
                + sweep_blocks(model, fig_dir))

    if cache is None:
        return make()
    return cache.blocks(_model_key("detail_model_blocks", model, answer_for_model or {}, cache), make)


# -- the whole report -------------------------------------------------------------------------


def methods_list() -> Bullets:
    return Bullets([f"`{m.name}`: {m.summary}" for m in METHODS.values()])


def footer(study: StudyResult) -> list:
    """The run: command, settings, seed, versions, wall times."""
    s = study.settings
    settings = s.as_dict()
    versions = ", ".join(f"{k} {v}" for k, v in study.versions.items())
    methods = [m for m in study.methods]
    wall_rows = []
    for m in study.models:
        row = [m.name, fmt(m.wall_seconds)]
        for method in methods:
            fit = m.fits.get(method)
            row.append(fmt(fit.info.get("wall_seconds")) if fit is not None and fit.ok else "–")
        wall_rows.append(row)
    return [
        Heading(2, "Run", anchor="run"),
        Paragraph(f"Command: `{study.command}`" if study.command else "Command: (in-process)"),
        Paragraph(
            f"Seed **{s.seed}**; {'quick' if s.quick else 'full'} settings: {s.svi_steps} SVI steps × "
            f"{particles_text(study)}, learning rate {s.lr_start} → {s.lr_end} (expected loss: constant {s.collapse_lr} for {s.collapse_steps} steps), "
            f"NUTS {s.nuts_chains} × ({s.nuts_warmup} warm-up + {s.nuts_draws}) draws."
        ),
        Paragraph(f"Versions: {versions}."),
        Paragraph(f"Wall time: {fmt(study.wall_seconds)} s in all."),
        Table(columns=["model", "model total"] + methods, rows=wall_rows, caption="Wall seconds per model and fit."),
        Details("All settings", [Table(columns=["setting", "value"], rows=[[k, str(v)] for k, v in settings.items()],
                                       numeric=False)]),
    ]


ANSWER_BLOCKS: list[Callable[[StudyResult, dict], list]] = []
MODEL_BLOCKS: list[Callable[[ModelResult, dict], list]] = []


def build(study: StudyResult, answer: dict, figures: dict[str, list[Image]] | None = None,
          answer_figures: list[Image] | None = None, extra_answer_blocks: list[Callable] | None = None,
          extra_model_blocks: list[Callable] | None = None,
          fig_dir: Path | None = None, cache: FigureCache | None = None) -> tuple[list, list]:
    """The report's blocks and its footer.

    Parameters
    ----------
    study, answer : StudyResult, dict
        The run and ``study.report.summary.study_answer(study)``.
    figures : dict, optional
        Model name -> its figures (``make_all``).
    answer_figures : list, optional
        Figures of the answer section.
    extra_answer_blocks, extra_model_blocks : list of callables, optional
        Contributors added after ``ANSWER_BLOCKS`` / ``MODEL_BLOCKS``.
    fig_dir : Path, optional
        Where the analysis figures (fixed point, KL ablation, guides, data size) are written;
        without it those blocks are left out.
    cache : FigureCache, optional
        The run's figure cache: unchanged analysis blocks are read back from it.
    """
    figures = figures or {}
    blocks: list = [Heading(1, TITLE, anchor="top")]
    blocks.extend(answer_blocks(study, answer, answer_figures or []))
    blocks.extend(benchmark_answer_blocks(study, answer))
    if fig_dir is not None:
        blocks.extend(detail_answer_blocks(study, answer, fig_dir, cache))
    for contribute in ANSWER_BLOCKS + list(extra_answer_blocks or []):
        blocks.extend(contribute(study, answer) or [])
    blocks.append(Heading(3, "Methods", anchor="methods"))
    blocks.append(methods_list())
    blocks.append(
        Paragraph(
            "All sds are of the unconstrained coordinates the guide lives in (a positive parameter "
            "appears as `name (log)`). `comparison.csv` holds every number; `idata/<model>/<method>.nc` "
            "the draws; `results.json` the numbers of this page."
        )
    )
    per_model = MODEL_BLOCKS + list(extra_model_blocks or [])
    if fig_dir is not None:
        per_model = [lambda model, answer_for_model: detail_model_blocks(model, fig_dir, cache, answer_for_model)] + per_model
    for model in study.models:
        blocks.append(model_section(model, figures.get(model.name, []), answer["models"].get(model.name, {}),
                                    per_model, cache))
    at = next((k for k, b in enumerate(blocks) if isinstance(b, Heading) and b.anchor == "question"), len(blocks))
    blocks[at:at] = contents(blocks, study)
    return blocks, footer(study)


def contents(blocks: list, study: StudyResult) -> list:
    """The table of contents: every anchored heading outside the model sections, then the models and the run."""
    items = [f"[{b.text}](#{b.anchor})" for b in blocks
             if isinstance(b, Heading) and b.level in (2, 3) and b.anchor]
    items.append("The models, one section each: see the [model index](#model-index)")
    items.append("[Run](#run): command, settings, versions, wall times")
    return [Heading(2, "Contents", anchor="contents"), Bullets(items)]


def render(study: StudyResult, answer: dict, out_dir: Path, figures=None, answer_figures=None, cache=None,
           **contributors) -> tuple[str, str]:
    """``(markdown, html)`` of the report; images are linked relative to ``out_dir``."""
    blocks, foot = build(study, answer, figures, answer_figures, fig_dir=Path(out_dir) / "figures", cache=cache,
                         **contributors)
    markdown = to_markdown(blocks + foot, out_dir)
    page = to_html(blocks, TITLE, footer=foot)
    return markdown, page
