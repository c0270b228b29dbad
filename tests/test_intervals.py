"""The report's forest plot: ArviZ's numbers, drawn directly."""

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study.report.topics.intervals import _forest_panel, forest_intervals  # noqa: E402


def arviz_forest_numbers(draws: np.ndarray, names: list[str]) -> np.ndarray:
    """What ``az.plot_forest(combined=True, quartiles=True, hdi_prob=0.94)`` draws, per parameter."""
    import arviz as az
    from arviz.plots.backends.matplotlib.forestplot import PlotHandler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = az.from_dict(posterior={name: draws[..., i] for i, name in enumerate(names)})
        handler = PlotHandler([data.posterior], var_names=names, model_names=["m"], combined=True, combine_dims=set(),
                              colors="cycle", labeller=az.labels.BaseLabeller())
    endpoint = 100 * (1 - 0.94) / 2
    qlist = [endpoint, 25, 50, 75, 100 - endpoint]
    out = {}
    for name, plotter in handler.plotters.items():
        for _, _, values, _ in plotter.treeplot(qlist, 0.94):
            out[name] = values
    return np.stack([out[name] for name in names])


def test_forest_intervals_are_arvizs_numbers():
    rng = np.random.default_rng(3)
    # Skewed, heavy-tailed and point-mass columns: the HDI differs from the equal-tailed interval.
    draws = np.stack([rng.normal(size=(2, 500)), rng.gamma(1.5, size=(2, 500)),
                      rng.standard_t(2, size=(2, 500)), np.full((2, 500), 0.25)], axis=-1)
    names = ["a", "b", "c", "d"]
    np.testing.assert_array_equal(forest_intervals(draws), arviz_forest_numbers(draws, names))


def test_forest_panel_draws_each_method_once_per_parameter_in_its_colour():
    rng = np.random.default_rng(4)
    names, methods = ["x", "y", "z"], ["first", "second"]
    intervals = [forest_intervals(rng.normal(loc=k, size=(1, 400, 3))) for k in range(2)]
    fig, ax = plt.subplots()
    _forest_panel(ax, names, methods, intervals)
    lines = ax.collections  # hlines: HDI then interquartile range, per method
    assert len(lines) == 2 * len(methods)
    for i, values in enumerate(intervals):
        hdi, quartiles = lines[2 * i].get_segments(), lines[2 * i + 1].get_segments()
        np.testing.assert_allclose([s[:, 0] for s in hdi], values[:, [0, 4]])
        np.testing.assert_allclose([s[:, 0] for s in quartiles], values[:, [1, 3]])
        np.testing.assert_allclose(ax.lines[i].get_xdata(), values[:, 2])
        assert lines[2 * i].get_linewidth()[0] * 2 == lines[2 * i + 1].get_linewidth()[0]
    # Parameters read top-down: the first name's tick is the highest, and within a parameter
    # the first method's row sits above the second's.
    ticks = ax.get_yticks()
    assert [t.get_text() for t in ax.get_yticklabels()] == names and np.all(np.diff(ticks) < 0)
    first_rows, second_rows = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    assert np.all(first_rows > second_rows)
    plt.close(fig)
