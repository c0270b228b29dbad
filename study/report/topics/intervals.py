"""Every method's 94% intervals for one model: a forest plot in ArviZ's style, drawn directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.core.results import ModelResult
from study.methods import METHODS
from study.report.document import Image, slug
from study.report.plotting import plt, save
from study.report.summary import shown_parameters, usable_fit


# The forest plot puts at most this many parameters in one column of panels.
FOREST_PARAMETERS_PER_COLUMN = 16
HDI_PROB = 0.94


def forest_intervals(draws: np.ndarray, hdi_prob: float = HDI_PROB) -> np.ndarray:
    """Per parameter: the HDI's ends, the quartiles and the median, as ``az.plot_forest`` draws them.

    ``draws`` has shape ``(chains, draws, k)`` (or ``(n, k)``); the result ``(k, 5)`` holds
    ``[hdi_low, q25, median, q75, hdi_high]``: ``az.hdi(..., multimodal=False)`` of the pooled
    draws and ``np.percentile`` at 25, 50 and 75, ArviZ's own ``treeplot`` with
    ``combined=True, quartiles=True`` (the same numbers to the bit).
    """
    from arviz import hdi

    flat = np.asarray(draws, dtype=float).reshape(-1, np.shape(draws)[-1])
    out = np.empty((flat.shape[1], 5))
    out[:, 1:4] = np.percentile(flat, [25, 50, 75], axis=0).T
    for k in range(flat.shape[1]):
        out[k, [0, 4]] = hdi(flat[:, k], hdi_prob, multimodal=False)
    return out


def _forest_data(model: ModelResult, shown) -> tuple[list[str], list[np.ndarray]]:
    """``(methods, [intervals (len(shown), 5)])`` for every method with draws (``forest_intervals``)."""
    methods, intervals = [], []
    for method in list(METHODS) + [m for m in model.fits if m not in METHODS]:
        fit = usable_fit(model, method)
        if fit is None or fit.draws is None:
            continue
        intervals.append(forest_intervals(np.asarray(fit.draws)[..., shown]))
        methods.append(method)
    return methods, intervals


def _forest_panel(ax, names: list[str], methods: list[str], intervals: list[np.ndarray],
                  linewidth: float = 1.2, markersize: float = 3, textsize: float = 8) -> None:
    """One column of the forest: parameters down the page, within each one row per method.

    Laid out as ``az.plot_forest(combined=True, quartiles=True)`` lays it out: the HDI as a
    thin line, the interquartile range twice as thick, the median an open circle, method
    ``i`` in colour ``Ci``, alternate parameters on a grey band, no y ticks or side spines.
    ArviZ builds an xarray selection per (parameter, method) row (6.4 s for the 31 x 12 rows
    of ``logistic_breast_cancer``); these are the same numbers drawn with one call per method.
    """
    rows = len(methods)
    row_gap, band_gap = 1.0, 1.0  # between the rows of one parameter; between parameters
    height = rows * row_gap + band_gap
    # Top parameter at the top; within a parameter the methods top-down in the legend's order.
    tops = (len(names) - 1 - np.arange(len(names))) * height
    centres = tops + (rows - 1) * row_gap / 2 + band_gap / 2
    for i, values in enumerate(intervals):
        y = tops + (rows - 1 - i) * row_gap + band_gap / 2
        colour = f"C{i}"
        ax.hlines(y, values[:, 0], values[:, 4], linewidth=linewidth, color=colour)
        ax.hlines(y, values[:, 1], values[:, 3], linewidth=2 * linewidth, color=colour)
        ax.plot(values[:, 2], y, "o", mfc=ax.get_facecolor(), markersize=markersize * 0.75, color=colour,
                linestyle="none")
    for j, top in enumerate(tops):
        if (len(names) - 1 - j) % 2:  # counted from the bottom, as ArviZ shades them
            ax.axhspan(top, top + height, color="k", alpha=0.1, linewidth=0)
    ax.set_ylim(0, len(names) * height)
    ax.set_yticks(centres)
    ax.set_yticklabels(names)
    ax.tick_params(labelsize=textsize)
    ax.tick_params(axis="y", left=False, right=False)
    ax.grid(False, axis="y")
    for side in ("left", "right"):
        ax.spines[side].set_visible(False)


def method_intervals(model: ModelResult, answer_for_model: dict, fig_dir: Path) -> Image | None:
    """A forest plot of every method's 94% HDI, interquartile range and median, parameters down the page.

    The draws are those of the ``InferenceData`` saved in ``idata/<model>/<method>.nc``
    (unconstrained coordinates), summarised as ``az.plot_forest`` summarises them
    (``forest_intervals``); a model with many parameters is laid out in several columns of
    at most ``FOREST_PARAMETERS_PER_COLUMN`` parameters each, and one with more than
    ``MAX_SHOWN_PARAMETERS`` shows a stated subset (``shown_parameters``).
    """
    shown, subset = shown_parameters(model)
    methods, intervals = _forest_data(model, shown)
    if not methods:
        return None
    names = [model.param_names[i] for i in shown]
    columns = int(np.ceil(len(names) / FOREST_PARAMETERS_PER_COLUMN))
    per_column = int(np.ceil(len(names) / columns))
    starts = range(0, len(names), per_column)
    rows = per_column * len(methods)
    height = 1.6 + 0.085 * rows + 0.2 * per_column
    fig, axes = plt.subplots(1, columns, figsize=(4.8 * columns, height), squeeze=False, sharex=True)
    for ax, first in zip(axes[0], starts):
        chunk = slice(first, first + per_column)
        _forest_panel(ax, names[chunk], methods, [values[chunk] for values in intervals])
    handles = [plt.Line2D([], [], color=f"C{i}") for i in range(len(methods))]
    legend_rows = int(np.ceil(len(methods) / 4))
    head = 0.3 + 0.2 * legend_rows  # inches above the panels: title and legend
    fig.suptitle(f"{model.title}: 94% HDI per method", fontsize=10, y=1 - 0.05 / height, va="top")
    fig.legend(handles, methods, loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.3 / height), ncol=min(4, len(methods)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - head / height))
    path = save(fig, fig_dir / f"intervals-{slug(model.name)}.png")
    caption = (f"Every method's 94% highest-density interval (thin), interquartile range (thick) and median "
               f"(circle), for each of the {len(names)} parameters")
    if columns > 1:
        caption += f", in {columns} columns"
    caption += " (unconstrained coordinates). The expected-loss intervals have collapsed to points."
    if subset:
        caption += f" Of the model's {subset}"
    return Image(path, f"Method intervals for {model.name}", caption)
