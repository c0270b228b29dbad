"""Mean-field SVI against the theory (Opper & Archambeau 2009), and the sigma collapse."""

import math

import numpy as np
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro

from models.linear_correlated import NOISE_SCALE, PRIOR_SCALE
from study.methods.svi import PartialELBO, fit_expected_loss

from conftest import make_run, sidak_z

def _conditional_sd(run):
    """``1/sqrt(Lambda_ii)`` of a model's exact Gaussian posterior: the mean-field optimum."""
    covariance = run.spec.exact_posterior(run.data).covariance.numpy()
    return 1.0 / np.sqrt(np.diag(np.linalg.inv(covariance)))


def test_meanfield_sigma_is_one_over_root_precision_diagonal(linear_meanfield):
    # For a Gaussian posterior the mean-field optimum is exactly sigma_i = Lambda_ii^-1/2.
    run, fit = linear_meanfield
    X = run.data["X"].numpy()
    target = 1.0 / np.sqrt(np.diag(X.T @ X / NOISE_SCALE**2 + np.eye(X.shape[1]) / PRIOR_SCALE**2))
    ratios = np.asarray(fit.info["sd_per_seed"]) / target  # (seeds, d): independent runs
    seeds = ratios.shape[0]
    assert seeds == 3
    # The bound: every seed, every parameter within 3%.
    assert np.all(np.abs(ratios - 1) < 0.03), ratios
    # And no bias beyond Monte Carlo error. The SE is the seed-to-seed spread pooled over
    # parameters (the optimiser works in units of sigma, so the relative noise is the same for
    # every parameter), divided by sqrt(seeds); pooled over 6 parameters it has 6 x 2 = 12
    # degrees of freedom, so each (mean - 1) / SE is Student-t(12). A Šidák bound over the 6
    # parameters makes a false alarm 1 in 1000 runs.
    residuals = ratios - ratios.mean(0)
    dof = residuals.size - ratios.shape[1]
    se = math.sqrt((residuals**2).sum() / dof) / math.sqrt(seeds)
    assert np.all(np.abs(ratios.mean(0) - 1) < sidak_z(ratios.shape[1], 1e-3, df=dof) * se), (ratios.mean(0), se)


def test_meanfield_mean_is_the_posterior_mean(linear_meanfield):
    run, fit = linear_meanfield
    exact = run.spec.exact_posterior(run.data).mean.numpy()
    target = _conditional_sd(run)
    means = np.asarray(fit.info["mean_per_seed"])  # (seeds, d)
    # Each seed's averaged mean is an unbiased estimate of the posterior mean with a jitter of
    # a small fraction of sigma. Bound: the seed-to-seed spread, pooled over parameters in
    # units of sigma (12 degrees of freedom), as a Šidák-corrected t bound over 6 parameters
    # at a 1e-3 false-alarm rate; and 0.1 sigma for every seed.
    assert np.all(np.abs(means - exact) < 0.1 * target)
    standardised = (means - means.mean(0)) / target
    dof = standardised.size - standardised.shape[1]
    se = math.sqrt((standardised**2).sum() / dof) / math.sqrt(means.shape[0])
    z = (means.mean(0) - exact) / target / se
    assert np.all(np.abs(z) < sidak_z(means.shape[1], 1e-3, df=dof)), z


def test_meanfield_sigma_matches_expected_hessian_on_logistic(logistic_meanfield):
    # Opper & Archambeau: at the optimum sigma_i^-2 = E_q[H_ii]. Estimate E_q[H_ii] with S
    # draws from q, H_ii(z) = sum_n p_n (1 - p_n) a_ni^2 + 1 in closed form (a_n = (x_n, 1),
    # N(0, 1) priors): an oracle independent of the code's autodiff Hessian. Its Monte Carlo
    # SE gives the SE of 1/sqrt(E_q[H_ii]) by the delta method.
    run, fit = logistic_meanfield
    X = run.data["X"].numpy()
    A = np.hstack([X, np.ones((X.shape[0], 1))])
    S = 2000
    generator = np.random.default_rng(1)
    z = fit.mean + fit.sd * generator.standard_normal((S, A.shape[1]))  # (S, d)
    p = 1.0 / (1.0 + np.exp(-(z @ A.T)))  # (S, N)
    h = (p * (1 - p)) @ (A**2) + 1.0  # (S, d)
    expected_h = h.mean(0)
    target = 1 / np.sqrt(expected_h)
    target_se = 0.5 * target * (h.std(0, ddof=1) / math.sqrt(S)) / expected_h
    ratio = fit.sd / target
    assert np.all(np.abs(ratio - 1) < 0.05), ratio  # the bound
    # The MC part of that error is small: 5% is > 5 SE of the target for every parameter.
    assert np.all(0.05 * target > 5 * target_se)


@pytest.mark.parametrize("name", ["seed_linear", "linear_correlated"])
def test_expected_loss_collapses_sigma(name):
    run = make_run(name)
    collapse = fit_expected_loss(run)
    log_sigma = collapse.trajectory["log_sigma"]  # (T, d)
    # Trends down: the last-half slope is negative for every parameter, and the final
    # quarter sits below the first quarter.
    assert np.all(np.asarray(collapse.info["log_sigma_slope_per_1000_steps"]) < 0)
    quarter = len(log_sigma) // 4
    assert np.all(log_sigma[-quarter:].mean(0) < log_sigma[:quarter].mean(0))
    # Far below the ELBO's optimum, the exact conditional sd 1/sqrt(Lambda_ii) of these
    # Gaussian posteriors (the mean-field fits reach it within 3%, tested above).
    target = _conditional_sd(run)
    assert np.all(collapse.sd < 0.05 * target), collapse.sd / target


def test_partial_elbo_with_both_terms_is_trace_elbo():
    # Same draws (same RNG seed) -> the same loss: our ablation objective is the ELBO when
    # both KL terms are on.
    run = make_run("linear_correlated")
    guide = AutoNormal(run.spec.model)
    pyro.clear_param_store()
    guide(**run.data)
    full = PartialELBO(8, run.joint.max_plate_nesting, include_prior=True, include_entropy=True)
    reference = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=run.joint.max_plate_nesting)
    pyro.set_rng_seed(3)
    ours = full(run.spec.model, guide, **run.data).item()
    pyro.set_rng_seed(3)
    theirs = reference.loss(run.spec.model, guide, **run.data)
    assert ours == pytest.approx(theirs, rel=1e-10)


@pytest.mark.parametrize("prior, entropy", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("name", ["linear_correlated", "eight_schools-eight_schools_noncentered"])
def test_masked_trace_elbo_is_the_partial_elbo(name, prior, entropy):
    # The fits minimise Trace_ELBO on a masked model/guide pair (it JIT-compiles); it must be
    # exactly the explicit objective with the same terms, on the same draws. Eight schools has
    # a constrained site, so the Jacobian bookkeeping is exercised too.
    from study.methods.svi import masked_objective

    run = make_run(name)
    pyro.clear_param_store()
    guide = AutoNormal(run.spec.model, init_scale=0.3)
    guide(**run.data)
    explicit = PartialELBO(8, run.joint.max_plate_nesting, include_prior=prior, include_entropy=entropy)
    model, masked_guide = masked_objective(run.spec.model, guide, prior, entropy)
    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=run.joint.max_plate_nesting)
    pyro.set_rng_seed(5)
    ours = explicit(run.spec.model, guide, **run.data).item()
    pyro.set_rng_seed(5)
    theirs = elbo.loss(model, masked_guide, **run.data)
    assert ours == pytest.approx(theirs, rel=1e-10)


def test_the_stopping_rule_needs_both_a_still_sigma_and_a_flat_loss():
    from study.core.settings import Settings
    from study.methods.svi import converged

    s = Settings.make()
    rng = np.random.default_rng(0)
    flat = rng.normal(10.0, 1.0, 400)  # losses: Monte Carlo noise only
    falling = flat + np.linspace(1.0, 0.0, 400)  # the same noise on a trend 7 SEs deep between the halves
    still = torch.ones(5)
    assert converged(flat, still, still * 1.005, s)
    assert not converged(falling, still, still * 1.005, s)
    assert not converged(flat, still, still * torch.tensor([1.02, 1.02, 1.02, 1.0, 1.0]), s)  # median drift 2%
    assert not converged(flat, still, still * torch.tensor([1.04, 1.0, 1.0, 1.0, 1.0]), s)  # one sigma 4%


def test_a_converged_fit_stops_before_the_cap_and_keeps_its_window():
    from study.methods.svi import optimise

    run = make_run("seed_linear", svi_steps=800, particles=8, svi_seeds=1, draws=10, elbo_draws=10, curvature_draws=16)
    result = optimise(run, "svi_meanfield")
    assert result.steps < 800 and result.steps % run.settings.check_every == 0
    assert len(result.loss) == result.steps and result.record_steps[-1] == result.steps - 1
    assert result.averaged_steps >= 0.2 * result.steps
    # Constant-rate runs (expected loss: sigma collapses) never stop early.
    collapse = optimise(run, "expected_loss", include_prior=False, include_entropy=False, constant_lr=0.05)
    assert collapse.steps == 800
