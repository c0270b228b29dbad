"""Mean-field SVI against the theory (Opper & Archambeau 2009), and the sigma collapse."""

import math

import numpy as np
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro

from models._glm import posterior_precision
from models.linear_correlated import NOISE_SCALE, PRIOR_SCALE
from study.methods.svi import PartialELBO, fit_expected_loss, fit_svi_meanfield

from conftest import make_run

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def linear_fits():
    fits = []
    for seed in SEEDS:
        run = make_run("linear_correlated", seed=seed, svi_seeds=1)  # one run per master seed
        fits.append(fit_svi_meanfield(run))
    precision = posterior_precision(run.data["X"], PRIOR_SCALE, NOISE_SCALE).numpy()
    return fits, 1.0 / np.sqrt(np.diag(precision))


def test_meanfield_sigma_is_one_over_root_precision_diagonal(linear_fits):
    # For a Gaussian posterior the mean-field optimum is exactly sigma_i = Lambda_ii^-1/2.
    fits, target = linear_fits
    ratios = np.stack([f.sd / target for f in fits])  # (seeds, d)
    # The bound: every seed, every parameter within 3%.
    assert np.all(np.abs(ratios - 1) < 0.03), ratios
    # And no bias beyond Monte Carlo error: each seed-average is within 4 SE of 1. The SE
    # is the seed-to-seed spread pooled over parameters (the optimiser works in units of
    # sigma, so the relative noise is the same for every parameter; 3 seeds alone would
    # estimate a per-parameter spread too poorly), divided by sqrt(seeds).
    residuals = ratios - ratios.mean(0)
    pooled_sd = math.sqrt((residuals**2).sum() / (residuals.size - ratios.shape[1]))
    se = pooled_sd / math.sqrt(len(SEEDS))
    assert np.all(np.abs(ratios.mean(0) - 1) < 4 * se), (ratios.mean(0), se)


def test_meanfield_mean_is_the_posterior_mean(linear_fits):
    fits, target = linear_fits
    run = make_run("linear_correlated")
    exact = run.spec.exact_posterior(run.data).mean.numpy()
    for fit in fits:
        # The averaged mean jitters by a small fraction of sigma; 0.1 sigma is > 5x that jitter
        # (measured: |error| / sigma <= 0.02 over seeds).
        assert np.all(np.abs(fit.mean - exact) < 0.1 * target)


def test_meanfield_sigma_matches_expected_hessian_on_logistic():
    # Opper & Archambeau: at the optimum sigma_i^-2 = E_q[H_ii]. Estimate E_q[H_ii] with S
    # draws from q; its Monte Carlo SE gives the SE of 1/sqrt(E_q[H_ii]) by the delta method.
    run = make_run("logistic_breast_cancer", svi_seeds=1, curvature_draws=16)  # its own check below
    fit = fit_svi_meanfield(run)
    S = 2000
    generator = np.random.default_rng(1)
    z = torch.as_tensor(fit.mean + fit.sd * generator.standard_normal((S, run.joint.dim)))
    h = run.joint.hessian_diagonal_batched(z).numpy()  # (S, d)
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
    svi = fit_svi_meanfield(make_run(name, svi_seeds=1))
    log_sigma = collapse.trajectory["log_sigma"]  # (T, d)
    # Trends down: the last-half slope is negative for every parameter, and the final
    # quarter sits below the first quarter.
    assert np.all(np.asarray(collapse.info["log_sigma_slope_per_1000_steps"]) < 0)
    quarter = len(log_sigma) // 4
    assert np.all(log_sigma[-quarter:].mean(0) < log_sigma[:quarter].mean(0))
    assert np.all(collapse.sd < 0.05 * svi.sd), collapse.sd / svi.sd


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
    from conftest import HAVE_POSTERIORDB
    from study.methods.svi import masked_objective

    if "schools" in name and not HAVE_POSTERIORDB:
        pytest.skip("no posteriordb database")
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
