"""Low-rank and full-rank guides: the flat layout of FlatJoint, honest convergence, the one-draw sampler."""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer.autoguide.initialization import init_to_value

from study.methods.guides import (
    GUIDES, LayoutMismatch, _OneDrawLowRankNormal, check_layout, factor_analysis, fit_guide, guide_covariance,
    laplace_start,
)
from study.methods.reference import fit_gold_draws

from conftest import make_run, needs_posteriordb


@pytest.mark.parametrize("method", list(GUIDES))
def test_guide_latent_vector_is_laid_out_like_the_flat_joint(method):
    # bnn_regression has four sites of three shapes ((10, 1), (10,), (1, 10), (1,)): site order
    # and C order within a site both matter. Distinct random values make any permutation show.
    run = make_run("bnn_regression")
    z = torch.randn(run.joint.dim, generator=torch.Generator().manual_seed(0))
    values = run.joint.constrain(z)
    pyro.clear_param_store()
    guide = GUIDES[method](run.spec.model, init_loc_fn=init_to_value(values=values))
    guide(**run.data)
    check_layout(guide, run, z)
    torch.testing.assert_close(guide.loc.detach(), z, rtol=0, atol=1e-12)
    with pytest.raises(LayoutMismatch):
        check_layout(guide, run, z.flip(0))


def test_fullrank_recovers_the_exact_marginal_sds_on_a_gaussian_posterior():
    # For a Gaussian posterior the full-rank optimum is the posterior: its marginal sds are
    # sqrt((Lambda^-1)_ii), 3x the mean-field sigma on this model. Cold start (0.1 I): the
    # Laplace start would begin at the answer, which proves nothing about the optimiser.
    fits = [fit_guide(make_run("linear_correlated", seed=seed), "svi_fullrank", init="scale") for seed in (0, 1, 2)]
    run = make_run("linear_correlated")
    exact = run.spec.exact_posterior(run.data).covariance.diagonal().sqrt().numpy()
    ratios = np.stack([f.sd / exact for f in fits])  # (seeds, d)
    assert np.all(np.abs(ratios - 1) < 0.03), ratios
    # No bias beyond Monte Carlo error: the seed average is within 4 SE of 1, the SE being the
    # seed-to-seed spread pooled over parameters (3 seeds alone estimate one parameter's
    # spread too poorly), over sqrt(seeds).
    residuals = ratios - ratios.mean(0)
    pooled_sd = math.sqrt((residuals**2).sum() / (residuals.size - ratios.shape[1]))
    se = pooled_sd / math.sqrt(len(fits))
    assert np.all(np.abs(ratios.mean(0) - 1) < 4 * se), (ratios.mean(0), se)
    assert all(f.info["jit"] and f.info["init"] == "MAP" for f in fits)
    # Laplace is in the family: the optimum's ELBO is not below it (3 SE of the paired estimate).
    assert all(f.info["elbo_minus_laplace"] > -3 * f.info["elbo_minus_laplace_se"] for f in fits)


def test_laplace_start_sets_the_guide_covariance():
    generator = torch.Generator().manual_seed(4)
    A = torch.randn(4, 4, generator=generator)
    covariance = A @ A.T + 0.1 * torch.eye(4)
    # rank >= d - 1: the low-rank form represents any covariance exactly.
    B, psi = factor_analysis(covariance, 3)
    torch.testing.assert_close(B @ B.T + torch.diag(psi), covariance)
    run = make_run("linear_correlated")
    exact = run.spec.exact_posterior(run.data).covariance
    for method in GUIDES:
        pyro.clear_param_store()
        guide = GUIDES[method](run.spec.model)
        guide(**run.data)
        laplace_start(guide, exact)
        ours = guide_covariance(guide).detach()
        if method == "svi_fullrank":
            torch.testing.assert_close(ours, exact)
        else:  # rank 2 of 6: factor analysis matches the variances, not every covariance
            torch.testing.assert_close(ours.diagonal(), exact.diagonal(), rtol=0.02, atol=0)


@needs_posteriordb
def test_fullrank_on_kilpisjarvi_needs_the_laplace_start_and_the_elbo_check_says_so():
    # Correlation -0.99999 between intercept and slope: from 0.1 I, Adam cannot grow the
    # Cholesky factor's off-diagonal entry to ~200 in 6000 steps; the paired ELBO difference to
    # Laplace exposes it. From the Laplace start the fit is Laplace or better.
    run = make_run("kilpisjarvi_mod-kilpisjarvi")
    gold = fit_gold_draws(run)
    warm = fit_guide(run, "svi_fullrank")
    cold = fit_guide(run, "svi_fullrank", init="scale")
    assert warm.info["covariance_init"] == "Laplace H^-1"
    assert warm.info["elbo_minus_laplace"] > -3 * warm.info["elbo_minus_laplace_se"]
    # Gold sds have SE ~0.7% (10,000 draws); the Gaussian family is ~3.5% narrow here (measured).
    assert np.all(np.abs(warm.sd / gold.sd - 1) < 0.06), warm.sd / gold.sd
    assert run.joint.param_names[:2] == ["alpha", "beta"]
    assert cold.info["elbo_minus_laplace"] < -1.0 and np.all(cold.sd[:2] / gold.sd[:2] < 0.2)


def test_lowrank_is_jit_compiled_and_between_meanfield_and_exact():
    run = make_run("linear_correlated")
    fit = fit_guide(run, "svi_lowrank")
    assert fit.info["jit"] and fit.info["rank"] == 2
    exact = run.spec.exact_posterior(run.data).covariance.diagonal().sqrt().numpy()
    conditional = 1 / np.sqrt(np.diag(np.linalg.inv(run.spec.exact_posterior(run.data).covariance.numpy())))
    # Rank 2 of 6 strongly correlated directions: above the conditional sd, at most the exact
    # sd, up to 3% optimiser noise (the full-rank fit's measured spread is below 1%).
    assert np.all(fit.sd > conditional) and np.all(fit.sd < 1.03 * exact), (fit.sd / exact)


def test_one_draw_low_rank_normal_is_the_low_rank_normal():
    generator = torch.Generator().manual_seed(1)
    loc = torch.randn(4, generator=generator)
    factor = torch.randn(4, 2, generator=generator)
    diag = torch.rand(4, generator=generator) + 0.5
    ours = _OneDrawLowRankNormal(loc, factor, diag)
    theirs = pyro.distributions.LowRankMultivariateNormal(loc, factor, diag)
    x = torch.randn(7, 4, generator=generator)
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x))
    torch.manual_seed(2)
    n = 200_000
    draws = ours.rsample((n,))
    covariance = factor @ factor.T + torch.diag(diag)
    # Sample covariance entries have SE sqrt((S_ij^2 + S_ii S_jj) / n) for Gaussian draws; 5 SE.
    se = torch.sqrt((covariance**2 + torch.outer(covariance.diagonal(), covariance.diagonal())) / n)
    assert torch.all((torch.cov(draws.T) - covariance).abs() < 5 * se)
    assert torch.all((draws.mean(0) - loc).abs() < 5 * covariance.diagonal().sqrt() / math.sqrt(n))
