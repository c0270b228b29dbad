"""The NUTS reference against an analytic posterior, within its own Monte Carlo error."""

import warnings

import arviz as az
import numpy as np
import pytest

from study.methods.reference import fit_nuts

from conftest import make_run, sidak_z


# About 50 s on 2 shared cores (the JIT compile of the potential is much of it, so a shorter
# chain saves little): a slow test.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nuts_on_a_gaussian():
    run = make_run("linear_correlated")  # default length: 2 chains x 600 draws
    return run, fit_nuts(run)  # NUTS although the model has an analytic posterior


def test_nuts_matches_the_analytic_posterior_within_its_mcse(nuts_on_a_gaussian):
    run, fit = nuts_on_a_gaussian
    assert fit.info["jit"]  # the potential ran as its checked trace
    exact = run.spec.exact_posterior(run.data)
    exact_mean = exact.mean.numpy()
    exact_sd = exact.covariance.diagonal().sqrt().numpy()
    dataset = az.convert_to_dataset({"z": fit.draws}, dims={"z": ["parameter"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcse_mean = np.asarray(az.mcse(dataset, method="mean")["z"].values)
    mcse_sd = np.asarray(fit.info["sd_se"])
    # NUTS on a near-N(0, I) target is often antithetic (ESS above the number of draws), and an
    # ESS estimate above it is itself noisy; floor each SE at that of independent draws.
    n = fit.draws.shape[0] * fit.draws.shape[1]
    mcse_mean = np.maximum(mcse_mean, exact_sd / np.sqrt(n))
    mcse_sd = np.maximum(mcse_sd, exact_sd / np.sqrt(2 * (n - 1)))
    assert fit.info["divergences"] == 0 and fit.info["max_r_hat"] < 1.05
    # 6 means and 6 sds, each (estimate - exact) / mcse ~ N(0, 1) for a well-mixed chain: a
    # Šidák bound over the 12 makes a false alarm 1 in 1000 runs (k = 3.9).
    k = sidak_z(12, 1e-3)
    z_mean = (fit.mean - exact_mean) / mcse_mean
    z_sd = (fit.sd - exact_sd) / mcse_sd
    assert np.all(np.abs(z_mean) < k), z_mean
    assert np.all(np.abs(z_sd) < k), z_sd
    # And the test has power: the mcse is a few percent of the sd, so a sampler that got the
    # conditional sd 1/sqrt(Lambda_ii) (3x smaller here) instead would fail by far.
    assert np.all(mcse_sd < 0.1 * exact_sd)
