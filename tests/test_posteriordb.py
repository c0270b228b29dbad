"""posteriordb models against their gold draws, read from the configured database."""

import math

from types import SimpleNamespace

import arviz as az
import numpy as np

from study.methods.laplace import fit_laplace_full
from models._posteriordb import load_reference_draws
from study.core.settings import Settings
from study.methods.reference import fit_gold_draws
from study.report.write import write_idata
from study.run.runner import run_model

from conftest import make_run, needs_posteriordb


@needs_posteriordb
def test_laplace_full_matches_gold_draws_on_near_gaussian_sblrc():
    run = make_run("sblrc-blr")
    gold = fit_gold_draws(run)
    laplace = fit_laplace_full(run)
    n = gold.info["n_draws"]  # posteriordb checked ESS ~ n for every parameter
    se_mean = gold.sd / math.sqrt(n)
    se_sd = gold.sd / math.sqrt(2 * (n - 1))
    # Coefficient means: the MAP of a near-Gaussian posterior is its mean; 5 SE.
    beta = slice(0, 5)
    z = (laplace.mean - gold.mean) / se_mean
    assert np.all(np.abs(z[beta]) < 5), z
    # sigma (log): the joint mode sits below the marginal mean by about
    # 0.5 log((N - 1) / (N - d - 1)) = 0.026 (the joint mode does not pay for the d = 5
    # coefficients' degrees of freedom), i.e. ~0.35 sd: a real Laplace error, not noise.
    offset = gold.mean[5] - laplace.mean[5]
    assert 0.5 * np.log(99 / 94) - 5 * se_mean[5] < offset < 0.5 * gold.sd[5], offset
    # Sds: Laplace at the joint mode ignores that the coefficients' spread scales with the
    # noise sd, a few-% effect here; allow 3% for it plus 3 SE of the gold sd (0.7% each).
    assert np.all(np.abs(laplace.sd / gold.sd - 1) < 0.03 + 3 * se_sd / gold.sd), laplace.sd / gold.sd


@needs_posteriordb
def test_gold_draws_reach_the_unconstrained_space():
    # Against the database's own draws, transformed here by hand: tau > 0 is stored as log tau,
    # theta_trans = (theta - mu) / tau, mu as it is.
    run = make_run("eight_schools-eight_schools_noncentered")
    gold = fit_gold_draws(run)
    raw = load_reference_draws("eight_schools-eight_schools_noncentered")
    names = run.joint.param_names
    assert names == [f"theta_trans[{j}]" for j in range(8)] + ["mu", "tau (log)"]
    draws = gold.draws[0]  # (draws, d)
    assert np.all(raw["tau"] > 0) and np.any(draws[:, names.index("tau (log)")] < 0)
    np.testing.assert_allclose(draws[:, names.index("tau (log)")], np.log(raw["tau"]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(draws[:, names.index("mu")], raw["mu"], rtol=1e-12)
    theta = np.stack([raw[f"theta[{j + 1}]"] for j in range(8)], axis=-1)
    np.testing.assert_allclose(draws[:, :8], (theta - raw["mu"][:, None]) / raw["tau"][:, None], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gold.sd[-1], np.std(np.log(raw["tau"]), ddof=1), rtol=1e-10)


@needs_posteriordb
def test_idata_files_hold_the_unconstrained_draws(tmp_path):
    # The written ArviZ file, read back: the variable is "tau (log)" and its draws are log tau.
    result = run_model("eight_schools-eight_schools_noncentered", ["reference"], Settings.make(quick=True),
                       progress=False)
    (path,) = write_idata(SimpleNamespace(models=[result]), tmp_path)
    idata = az.from_netcdf(path)
    raw = load_reference_draws("eight_schools-eight_schools_noncentered")
    assert set(idata.posterior.data_vars) == {"theta_trans", "mu", "tau (log)"}
    np.testing.assert_allclose(idata.posterior["tau (log)"].values.reshape(-1), np.log(raw["tau"]), rtol=1e-12)
