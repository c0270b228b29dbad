"""The data-size sweep's pieces: subsets, sizes, slopes; and one short sweep."""

import numpy as np
import torch

from study.methods.sweep import fit_data_sweep, loglog_slopes, observation_count, sizes_for, subsample

from conftest import make_run


def test_sizes_subsets_and_slopes():
    assert sizes_for(569, 3) == [71, 142, 284, 569]
    assert sizes_for(5, 4) == [2, 5]  # distinct, at least 2 rows
    data = {"X": torch.arange(12.0).reshape(6, 2), "y": torch.arange(6.0), "scale": torch.tensor(2.0)}
    cut = subsample(data, 6, np.array([4, 1]))
    assert cut["X"].tolist() == [[8.0, 9.0], [2.0, 3.0]] and cut["y"].tolist() == [4.0, 1.0]
    assert cut["scale"] is data["scale"]
    sizes = [10, 20, 40, 80]
    sd = np.stack([[3.0 * n**-0.5, 2.0 * n**-1.0] for n in sizes])
    np.testing.assert_allclose(loglog_slopes(sizes, sd), [-0.5, -1.0])


def test_a_short_sweep_on_linear_correlated():
    run = make_run("linear_correlated", svi_steps=400, sweep_halvings=1)
    assert observation_count(run) == 40
    fit = fit_data_sweep(run)
    assert fit.info["sizes"] == [20, 40]
    sd = {m: np.asarray(v) for m, v in fit.info["sd"].items()}
    # Gaussian posterior: laplace_diag is 1/sqrt(Lambda_ii) at each N; Lambda_ii = sum_n x_ni^2 + 1
    # grows with the rows, so every conditional sd shrinks from N = 20 to 40.
    assert np.all(sd["laplace_diag"][1] < sd["laplace_diag"][0])
    # The mean-field sigma is that conditional sd at every N (3% covers a 400-step fit's noise).
    assert np.all(np.abs(sd["svi_meanfield"] / sd["laplace_diag"] - 1) < 0.03)
    assert np.all(sd["laplace_full"] >= sd["laplace_diag"])
