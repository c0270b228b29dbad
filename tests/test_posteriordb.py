"""posteriordb models against their gold draws, read from the configured database."""

import math

import numpy as np

from study.methods.laplace import fit_laplace_full
from study.methods.reference import fit_gold_draws

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
    run = make_run("eight_schools-eight_schools_noncentered")
    gold = fit_gold_draws(run)
    assert run.joint.param_names[-1] == "tau (log)"
    # theta_trans = (theta - mu) / tau has a N(0, 1) prior and the data barely move it.
    assert np.all(np.abs(gold.mean[:8]) < 0.5) and np.all(np.abs(gold.sd[:8] - 1) < 0.1)
