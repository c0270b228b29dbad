"""Networks: does sigma track the Hessian diagonal, layer by layer and rung by rung?

For every network in the run (a model with an ``ivon`` fit or a GGN fit), per layer
(latent site) and per rung (number of weights ``d``):

* a log-log scatter of ``sigma_i^-2`` (mean-field SVI) against the exact Hessian
  diagonal ``H_ii`` of ``-log p`` (at the mean-field mean, ``hessian_diag``; at the MAP where
  only ``laplace_diag`` has it) and against the GGN diagonal (plus the
  prior precision), one panel per layer and rung;
* the per-layer median of ``sigma_i^-2 / H_ii`` and ``sigma_i^-2 / GGN_ii`` with a
  standard error, and the same for IVON's ``N (h_i + delta)``;
* wall seconds (and peak memory where a fit recorded it) against ``d``, log-log, with
  the least-squares slope per method;
* an answer chosen by thresholds: from which ``d`` and in which layers sigma stops
  tracking ``1/sqrt(H_ii)``, and whether it tracks the GGN better.

Curvature sources, first available: the Hessian diagonal from ``hessian_diag`` or
``laplace_diag`` (``sd = 1/sqrt(H_ii)``; a subset method leaves the other coordinates
NaN), the GGN diagonal from ``ggn_diag`` or ``laplace_torch_diag``
(``sd = 1/sqrt(GGN_ii + prior precision)``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from study.core.results import ModelResult
from study.report.answer import fmt
from study.report.document import Bullets, Heading, Image, Paragraph, Table
from study.report.plotting import DETAIL_DPI, plt, save
from study.report.summary import (  # noqa: F401  (the networks' numbers live with the others)
    GGN_SOURCES, HESSIAN_SOURCES, SIGMA_SOURCES, _fit_ok, is_network, median_with_se, network_ratios, precision_of,
)

# A layer "tracks" a curvature when the median of sigma_i^-2 / curvature_i lies within this
# factor of 1 (a factor 1.25^2 in precision: sigma within 25%, the band of the main answer).
TRACK_FACTOR = 1.25**2
# Points per scatter panel (a random subset above it, for a readable, small figure).
MAX_POINTS = 3000


def layer_slices(model: ModelResult) -> list[tuple[str, slice]]:
    """``(site name, flat slice)`` per latent site, from the model's layout."""
    return [(name, slice(offset, offset + int(np.prod(shape) if len(shape) else 1)))
            for name, offset, shape in model.layout]


def layer_table(model: ModelResult) -> list[dict]:
    """Per layer: the median precision ratios of each sigma source against H and GGN, with SEs;
    the mean-field fixed-point residual; sigma^-2 against H at the MAP (``laplace_diag``); and
    IVON's precision against ``E_q[H_ii]`` under the mean-field q (its fixed-point check's)."""
    hessian, h_source = precision_of(model, HESSIAN_SOURCES)
    ggn, g_source = precision_of(model, GGN_SOURCES)
    at_map, _ = precision_of(model, ("laplace_diag",))
    if h_source == "laplace_diag":
        at_map = None  # the "H" column is already the MAP's
    svi = _fit_ok(model, "svi_meanfield")
    fixed = (svi.info.get("fixed_point") or {}) if svi is not None else {}
    expected = np.asarray(fixed["expected_hessian"], dtype=float) if fixed.get("expected_hessian") else None
    rows = []
    for name, part in layer_slices(model):
        row = {"layer": name, "n": part.stop - part.start, "hessian_source": h_source, "ggn_source": g_source}
        site = (fixed.get("by_site") or {}).get(name)
        if site is not None:
            # The gradient-only check's per-weight residuals are skewed: its layer summary is their mean
            # with a per-pair SE (study.checks.fixed_point.residual_by_site); the exact check's, the median.
            key = "mean_r" if "mean_r" in site else "median_r"
            row["fixed_point"] = (site[key], site[key + "_se"], site["n"], key.split("_")[0])
        for method in SIGMA_SOURCES:
            fit = _fit_ok(model, method)
            if fit is None:
                continue
            precision = np.asarray(fit.sd, dtype=float)[part] ** -2.0
            for label, curvature in (("H", hessian), ("GGN", ggn), ("H_map", at_map), ("EqH", expected)):
                if curvature is None or (label == "H_map" and method != "svi_meanfield") or (
                        label == "EqH" and method != "ivon"):
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = precision / curvature[part]
                ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
                if len(ratio):
                    row[f"{method}/{label}"] = median_with_se(ratio) + (len(ratio),)
        rows.append(row)
    return rows


def _span(values: list[float]) -> str:
    values = sorted(v for v in values if v is not None and np.isfinite(v))
    if not values:
        return "–"
    return fmt(values[0]) if len(values) == 1 or fmt(values[0]) == fmt(values[-1]) else f"{fmt(values[0])} to {fmt(values[-1])}"


def _with_se(value: float, se: float | None) -> str:
    """``value ± se``; the value alone where there is no SE (a one-weight layer)."""
    if se is None or not np.isfinite(se):
        return fmt(value)
    return f"{fmt(value)} ± {fmt(se, 2)}"


def networks_sentence(summary: dict) -> str:
    """One sentence: the networks' per-layer ratios, as ranges over every layer of every rung."""
    models = summary["models"]
    rows = [row for m in models for row in m["layers"]]
    if not rows:
        return ""
    ds = [m["d"] for m in models]

    def span(key: str) -> str:
        return _span([row[key][0] for row in rows if row.get(key) is not None])

    return (f"Over the {len(rows)} layers of {len(models)} network{'s' if len(models) > 1 else ''} "
            f"(d = {min(ds):,}{'' if len(ds) == 1 else f' to {max(ds):,}'}), the mean-field fixed-point residual "
            f"σᵢ²E_q[Hᵢᵢ] − 1 is {span('fixed_point')}, while σᵢ⁻²/Hᵢᵢ is {span('svi_meanfield/H')} at the guide's mean, "
            f"{span('svi_meanfield/H_map')} at the MAP and {span('svi_meanfield/GGN')} against the GGN; IVON's "
            f"N(h+δ)/E_q[Hᵢᵢ] is {span('ivon/EqH')}.")


def tracks(entry) -> bool | None:
    """Whether a ``(median, se, n)`` entry is within ``TRACK_FACTOR`` of 1; None without one."""
    if entry is None or not np.isfinite(entry[0]):
        return None
    return 1.0 / TRACK_FACTOR <= entry[0] <= TRACK_FACTOR


def networks_summary(study) -> dict:
    """Per network model (sorted by d): its d, layer table and method costs."""
    out = []
    for model in study.models:
        if model.status != "ok" or not is_network(model):
            continue
        costs = {m: {"wall_seconds": f.info.get("wall_seconds"), "peak_memory_bytes": f.info.get("peak_memory_bytes"),
                     "peak_rss_above_base_bytes": f.info.get("peak_rss_above_base_bytes")}
                 for m, f in model.fits.items() if f.ok}
        out.append({"model": model.name, "title": model.title, "d": len(model.param_names),
                    "layers": layer_table(model), "costs": costs})
    out.sort(key=lambda m: m["d"])
    return {"models": out}


def answer_text(summary: dict) -> str:
    """The networks answer, chosen by ``TRACK_FACTOR`` thresholds."""
    models = summary["models"]
    if not models:
        return ""
    broken, better_ggn, compared = [], 0, 0
    for m in models:
        for row in m["layers"]:
            h, g = row.get("svi_meanfield/H"), row.get("svi_meanfield/GGN")
            if tracks(h) is False:
                broken.append((m["d"], m["model"], row["layer"], h[0]))
            if h is not None and g is not None and np.isfinite(h[0]) and np.isfinite(g[0]):
                compared += 1
                better_ggn += abs(math.log(g[0])) < abs(math.log(h[0]))
    with_h = [m for m in models if any(row.get("svi_meanfield/H") for row in m["layers"])]
    if not with_h:
        return ("No network in this run has both a mean-field fit and a Hessian diagonal, so whether σ tracks "
                "1/√Hᵢᵢ is not answered here.")
    if not broken:
        text = (f"In every layer of every network (d up to {max(m['d'] for m in with_h):,}) the median of "
                f"σᵢ⁻²/Hᵢᵢ lies within a factor {fmt(TRACK_FACTOR)} of 1: σ tracks 1/√Hᵢᵢ.")
    else:
        first = min(b[0] for b in broken)
        at_first = [f"`{b[2]}` (median {fmt(b[3])})" for b in broken if b[0] == first]
        text = (f"σ stops tracking 1/√Hᵢᵢ (median σᵢ⁻²/Hᵢᵢ outside a factor {fmt(TRACK_FACTOR)} of 1) from "
                f"d = {first:,}, in {', '.join(at_first)}; {len(broken)} layer-rungs in all are off.")
    if compared:
        text += (f" Against the GGN diagonal the median ratio is closer to 1 than against the Hessian in "
                 f"{better_ggn} of {compared} layer-rungs: σ tracks the GGN "
                 f"{'better than' if better_ggn > compared / 2 else 'no better than'} the Hessian.")
    return text


def scatter_figure(study, fig_dir: Path) -> Image | None:
    """One panel per (rung, layer): sigma^-2 against H_ii (blue) and GGN_ii (orange), log-log."""
    panels = []
    for model in sorted((m for m in study.models if m.status == "ok" and is_network(m)),
                        key=lambda m: len(m.param_names)):
        svi = _fit_ok(model, "svi_meanfield")
        if svi is None:
            continue
        hessian, _ = precision_of(model, HESSIAN_SOURCES)
        ggn, _ = precision_of(model, GGN_SOURCES)
        for name, part in layer_slices(model):
            panels.append((model, name, part, np.asarray(svi.sd)[part] ** -2.0,
                           None if hessian is None else hessian[part], None if ggn is None else ggn[part]))
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (model, name, part, precision, hessian, ggn) in zip(axes.flat, panels):
        lo, hi = np.inf, -np.inf
        for curvature, color, label in ((hessian, "C0", "Hᵢᵢ"), (ggn, "C1", "GGNᵢᵢ")):
            if curvature is None:
                continue
            keep = np.flatnonzero(np.isfinite(curvature) & (curvature > 0))
            if len(keep) > MAX_POINTS:
                keep = rng.choice(keep, MAX_POINTS, replace=False)
            if len(keep) == 0:
                continue
            ax.scatter(curvature[keep], precision[keep], s=3, alpha=0.4, color=color, label=label, lw=0)
            lo = min(lo, curvature[keep].min(), precision[keep].min())
            hi = max(hi, curvature[keep].max(), precision[keep].max())
        if np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
            ax.set(xscale="log", yscale="log")
        ax.set_title(f"{model.name}: {name}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, markerscale=3)
    fig.supxlabel("curvature (Hessian or GGN diagonal, prior included)", fontsize=9)
    fig.supylabel(r"$\sigma_i^{-2}$ (mean-field SVI)", fontsize=9)
    path = save(fig, dpi=DETAIL_DPI, path=Path(fig_dir) / "networks-scatter.png")
    return Image(path, "sigma^-2 against the Hessian and GGN diagonals, per layer and rung",
                 "One dot per weight (a random subset of at most 3,000 per panel); the dashed line is equality.")


COST_MEASURES = (("wall_seconds", "wall seconds", 1.0),
                 ("peak_rss_above_base_bytes", "peak resident memory above the fit's start (MiB)", 2.0**-20))


def cost_figure(summary: dict, fig_dir: Path) -> tuple[Image | None, dict]:
    """Wall seconds and peak memory against d per method, log-log, with least-squares slopes.

    Returns the figure and ``{measure: {method: slope}}``. Memory is the resident set above
    what the worker held when the fit began (``study.core.memory.PeakMemory``); a fit that
    freed more than it took shows none and is left out of the log-log panel.
    """
    models = summary["models"]
    slopes: dict[str, dict[str, float]] = {key: {} for key, _, _ in COST_MEASURES}
    methods = sorted({m for entry in models for m, c in entry["costs"].items() if c.get("wall_seconds")})
    if len(models) < 2 or not methods:
        return None, slopes
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for ax, (key, label, unit) in zip(axes, COST_MEASURES):
        for i, method in enumerate(methods):
            points = [(e["d"], e["costs"][method][key] * unit) for e in models
                      if (e["costs"].get(method, {}).get(key) or 0) > 0]
            if len(points) < 2:
                continue
            d, value = np.asarray(points, dtype=float).T
            slope = float(np.polyfit(np.log(d), np.log(value), 1)[0]) if len(set(d)) > 1 else float("nan")
            slopes[key][method] = slope
            ax.plot(d, value, marker="o", color=f"C{i % 10}", label=f"{method} (slope {slope:.2f})")
        ax.set(xscale="log", yscale="log", xlabel="d (weights)", ylabel=label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_title("Time against size", fontsize=10)
    axes[1].set_title("Memory against size", fontsize=10)
    path = save(fig, dpi=DETAIL_DPI, path=Path(fig_dir) / "networks-cost.png")
    return Image(path, "Wall seconds and peak memory against d per method",
                 "Least-squares slope of log cost on log d in the legends (1: linear in d). Memory: the worker's "
                 "resident set above its level when the fit began, sampled every 10 ms."), slopes


def networks_answer(study, answer: dict, fig_dir: Path) -> list:
    """The report's networks section (empty when the run has no network)."""
    summary = networks_summary(study)
    if not summary["models"]:
        return []
    blocks: list = [Heading(2, "Networks", anchor="networks"), Paragraph(answer_text(summary))]
    whole = answer.get("networks") or network_ratios(study)
    if whole:
        blocks.append(Table(
            columns=["network", "weights", "median σᵢ⁻²/Hᵢᵢ ± SE"], numeric=False,
            rows=[[name, f"{e['n']:,}", f"{fmt(e['median'])} ± {fmt(e['se'], 2)}" if e.get("se") is not None
                   else fmt(e["median"])] for name, e in whole.items()],
            caption=("Per network without a reference, over all its weights (the opening's claim 2): σᵢ⁻² of the "
                     "mean-field fit over "
                     "Hᵢᵢ, the exact Hessian diagonal at the guide's mean (`hessian_diag`). SE: 1.2533 × sd of the "
                     "log ratio / √n, on the median's scale, as in the per-layer table below.")))
    rows = []
    for entry in summary["models"]:
        for row in entry["layers"]:
            cells = [entry["model"], f"{entry['d']:,}", row["layer"], str(row["n"])]
            fp = row.get("fixed_point")
            cells.append("–" if fp is None else f"{_with_se(fp[0], fp[1])} ({fp[3]})")
            for key in ("svi_meanfield/H", "svi_meanfield/H_map", "svi_meanfield/GGN", "ivon/EqH", "ivon/H"):
                value = row.get(key)
                cells.append("–" if value is None else _with_se(value[0], value[1]))
            rows.append(cells)
    blocks.append(Paragraph(networks_sentence(summary)))
    blocks.append(Table(
        columns=["model", "d", "layer", "weights", "σᵢ²E_q[Hᵢᵢ] − 1", "σ⁻²/Hᵢᵢ (mean)", "σ⁻²/Hᵢᵢ (MAP)",
                 "σ⁻²/GGNᵢᵢ", "IVON N(h+δ)/E_q[Hᵢᵢ]", "IVON N(h+δ)/Hᵢᵢ"],
        rows=rows,
        caption=("Per layer. σᵢ²E_q[Hᵢᵢ] − 1: the mean-field fixed-point residual, 0 at the fixed point; the mean "
                 "over the layer's weights with the SE of its per-pair means (gradient-only check, above 5,000 "
                 "weights), else the median of the measured weights; each seed checked at its own q. The other "
                 "columns: the median over weights of the precision ratio ± its SE (1.2533 × sd of the log ratio / "
                 "√n, on the median's scale). Hᵢᵢ: exact Hessian diagonal of −log p at the mean-field mean "
                 "(`hessian_diag`; a random subset of coordinates above 20,000 weights) or at the MAP "
                 "(`laplace_diag`, up to 5,000 weights); GGN: laplace-torch's generalised Gauss-Newton diagonal plus "
                 "the prior precision; E_q[Hᵢᵢ]: under the mean-field q, from its fixed-point check (measured "
                 "coordinates only, its Monte Carlo noise in the ratio)."),
    ))
    moved = []
    for model in study.models:
        fit = _fit_ok(model, "ivon")
        if fit is not None and fit.info.get("h_moved_median") is not None:
            cfg = fit.info.get("config", {})
            moved.append(f"{model.name}: median |h/h_init − 1| = {fmt(fit.info['h_moved_median'])} after "
                         f"{cfg.get('steps')} steps at β2 = {fmt(cfg.get('beta2'), 5)} (h_init {cfg.get('hess_init')})")
    if moved:
        blocks += [Paragraph("IVON's Hessian estimate h left its initial value, per network:"), Bullets(moved)]
    used = []
    for model in study.models:
        fit = _fit_ok(model, "svi_meanfield")
        if fit is not None and is_network(model) and fit.info.get("data_subsampling"):
            fp = fit.info.get("fixed_point", {}).get("by_site") or {}
            # The gradient-only (Price) check summarises a layer by its mean residual: the median
            # of its skewed per-weight estimates is biased (study.checks.fixed_point.price_residual).
            mean = bool(fp) and all("mean_r" in v for v in fp.values())
            key = "mean_r" if mean else "median_r"
            residuals = ", ".join(f"{k} {fmt(v[key])} ± {fmt(v[key + '_se'], 2)}" for k, v in fp.items())
            precision = fit.info.get("fit_dtype", "float64")
            used.append(f"{model.name}: {fit.info['data_subsampling']}, {fit.info.get('particles')} particles, "
                        f"{precision}, {fit.info.get('steps')} steps, σ started at {fit.info.get('sigma_start') or 'init_scale'}; "
                        f"{'mean' if mean else 'median'} fixed-point residual per layer: {residuals or '–'}")
    if used:
        blocks += [Paragraph("Mean-field SVI on the networks, per network:"), Bullets(used)]
        blocks.append(Paragraph(
            "Above 5,000 weights the residual "
            "rᵢ = σᵢ²E_q[Hᵢᵢ] − 1 comes from gradients (Price's estimator, antithetic pairs); its per-weight "
            "estimates are unbiased but skewed, so a layer is summarised by their mean, whose SE is the spread "
            "of the per-pair means (their median would read −0.021 at the fixed point with 32 pairs)."))
    scatter = scatter_figure(study, fig_dir)
    if scatter is not None:
        blocks.append(scatter)
    cost, slopes = cost_figure(summary, fig_dir)
    if cost is not None:
        blocks.append(cost)
        blocks.append(Paragraph(
            "The same measures per rung in fresh processes, and GPU memory with `--device cuda`: "
            "`benchmarks/networks.py`."))
    return blocks
