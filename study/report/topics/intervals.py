"""Every method's 94% intervals for one model (``az.plot_forest``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


from study.core.results import ModelResult  # noqa: E402
from study.methods import METHODS  # noqa: E402
from study.report.document import Image, slug  # noqa: E402
from study.report.plotting import save  # noqa: E402
from study.report.summary import shown_parameters, usable_fit  # noqa: E402


# The forest plot puts at most this many parameters in one column of panels.
FOREST_PARAMETERS_PER_COLUMN = 16


def _forest_data(model: ModelResult, shown):
    """``(methods, [InferenceData])``: one per method with draws, one scalar variable per shown parameter."""
    import arviz as az

    methods, datasets = [], []
    for method in list(METHODS) + [m for m in model.fits if m not in METHODS]:
        fit = usable_fit(model, method)
        if fit is None or fit.draws is None:
            continue
        draws = np.asarray(fit.draws)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets.append(az.from_dict(posterior={model.param_names[i]: draws[..., i] for i in shown}))
        methods.append(method)
    return methods, datasets


def method_intervals(model: ModelResult, answer_for_model: dict, fig_dir: Path) -> Image | None:
    """``az.plot_forest`` of every method's 94% HDI, parameters down the page.

    The draws are those of the ``InferenceData`` saved in ``idata/<model>/<method>.nc``,
    one variable per parameter so that a model with many parameters can be laid out in
    several columns of at most ``FOREST_PARAMETERS_PER_COLUMN`` parameters each. A model
    with more than ``MAX_SHOWN_PARAMETERS`` shows a stated subset (``shown_parameters``).
    """
    import arviz as az

    shown, subset = shown_parameters(model)
    methods, datasets = _forest_data(model, shown)
    if not methods:
        return None
    names = [model.param_names[i] for i in shown]
    columns = int(np.ceil(len(names) / FOREST_PARAMETERS_PER_COLUMN))
    per_column = int(np.ceil(len(names) / columns))
    chunks = [names[i:i + per_column] for i in range(0, len(names), per_column)]
    rows = per_column * len(methods)
    height = 1.6 + 0.085 * rows + 0.2 * per_column
    fig, axes = plt.subplots(1, columns, figsize=(4.8 * columns, height), squeeze=False, sharex=True)
    handles, labels = [], []
    for ax, chunk in zip(axes[0], chunks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # legend=True keeps ArviZ from repeating the method in every row label.
            az.plot_forest(datasets, model_names=methods, var_names=chunk, combined=True, hdi_prob=0.94,
                           ax=ax, textsize=8, markersize=3, linewidth=1.2, legend=True)
        legend = ax.get_legend()
        if legend is not None:
            handles, labels = list(legend.legend_handles), [t.get_text() for t in legend.get_texts()]
            legend.remove()
        ax.set_title("")
    # ArviZ lists the methods bottom-up; the legend reads in the rows' top-down order.
    order = {m: i for i, m in enumerate(methods)}
    pairs = sorted(zip(handles, labels), key=lambda p: order.get(p[1], 0))
    legend_rows = int(np.ceil(len(methods) / 4))
    head = 0.3 + 0.2 * legend_rows  # inches above the panels: title and legend
    fig.suptitle(f"{model.title}: 94% HDI per method", fontsize=10, y=1 - 0.05 / height, va="top")
    fig.legend([h for h, _ in pairs], [lab for _, lab in pairs], loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.3 / height), ncol=min(4, len(methods)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - head / height))
    path = save(fig, fig_dir / f"intervals-{slug(model.name)}.png")
    caption = (f"az.plot_forest: every method's 94% highest-density interval and median, for each of the "
               f"{len(names)} parameters")
    if columns > 1:
        caption += f", in {columns} columns"
    caption += " (unconstrained coordinates). The expected-loss intervals have collapsed to points."
    if subset:
        caption += f" Of the model's {subset}"
    return Image(path, f"Method intervals for {model.name}", caption)
