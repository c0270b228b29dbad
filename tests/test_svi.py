"""Mean-field SVI against the theory (Opper & Archambeau 2009), and the sigma collapse."""

import math

import numpy as np
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyro

from models.linear_correlated import NOISE_SCALE, PRIOR_SCALE
from partial_elbo import PartialELBO

from study.methods.svi import fit_expected_loss

from conftest import make_run, sidak_z

# Family-wise false-alarm rate of each test's stochastic bounds (Šidák over what it tests at once).
FALSE_ALARM = 1e-3


def _conditional_sd(run):
    """``1/sqrt(Lambda_ii)`` of a model's exact Gaussian posterior: the mean-field optimum."""
    covariance = run.spec.exact_posterior(run.data).covariance.numpy()
    return 1.0 / np.sqrt(np.diag(np.linalg.inv(covariance)))


def _each_seed_z(values: np.ndarray, exact: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, int]:
    """Each seed's error ``(values - exact) / unit`` over the spread of the other seeds; and its dof.

    ``values`` is ``(K, d)``, one row per independent seed. In units of ``unit`` (sigma) the
    optimiser's seed-to-seed noise is about the same for every parameter, so the other ``K - 1``
    seeds' spread is pooled over parameters: ``d (K - 2)`` degrees of freedom. The seed itself is
    left out of its SE: it is independent of the others, so each z is exactly Student-t, and a
    seed that is far off cannot widen its own bound (with it in, one seed off by any amount
    reaches at most |z| = sqrt(d K), 4.2 at d = 6, K = 3: below any k, a test that cannot fail).
    """
    scaled = (values - exact) / unit
    K, d = scaled.shape
    z = np.empty_like(scaled)
    for seed in range(K):
        others = np.delete(scaled, seed, axis=0)
        spread = np.sqrt(((others - others.mean(0)) ** 2).sum() / (d * (K - 2)))
        z[seed] = scaled[seed] / spread
    return z, d * (K - 2)


def test_meanfield_sigma_is_one_over_root_precision_diagonal(linear_meanfield):
    # For a Gaussian posterior the mean-field optimum is exactly sigma_i = Lambda_ii^-1/2.
    run, fit = linear_meanfield
    X = run.data["X"].numpy()
    target = 1.0 / np.sqrt(np.diag(X.T @ X / NOISE_SCALE**2 + np.eye(X.shape[1]) / PRIOR_SCALE**2))
    per_seed = np.asarray(fit.info["sd_per_seed"])  # (seeds, d): independent runs
    seeds, d = per_seed.shape
    assert seeds == 3
    # The seed average is sigma up to Monte Carlo error. Its SE is the fit's own (sd_se: the
    # seed-to-seed spread, relative, pooled over the 6 parameters, 12 degrees of freedom; its
    # formula is checked against independent repeats in test_fixed_point.py), so each z is
    # Student-t(12); a Šidák bound over the 6 parameters, false alarm 1 in 1000 runs (k = 5.4).
    # No bias term: on this Gaussian posterior the ELBO's optimum is exactly this sigma, and the
    # stopped, iterate-averaged fit shows no shortfall beyond its noise (over 8 independent fits,
    # 24 seeds: mean error 0.00% +- 0.10%, the z's RMS 0.97).
    z = (fit.sd - target) / np.asarray(fit.info["sd_se"])
    assert np.all(np.abs(z) < sidak_z(d, FALSE_ALARM, df=d * (seeds - 1))), z
    # Every seed on its own, against the other two seeds' spread (_each_seed_z: 6 degrees of
    # freedom, Student-t(6)); a Šidák bound over the 3 x 6 = 18 tests at 1e-3 (k = 10.1; the 18
    # share SEs, and Šidák's bound holds for them: 8.5e-4 in a simulation of 10^6 runs). (The
    # issue's "every seed within 3%" was 2.9 per-seed sds, ~1.05% here: over 18 tests it failed
    # ~7% of runs.)
    z, dof = _each_seed_z(per_seed, target, target)
    assert np.all(np.abs(z) < sidak_z(z.size, FALSE_ALARM, df=dof)), z


def test_meanfield_mean_is_the_posterior_mean(linear_meanfield):
    run, fit = linear_meanfield
    exact = run.spec.exact_posterior(run.data).mean.numpy()
    target = _conditional_sd(run)
    means = np.asarray(fit.info["mean_per_seed"])  # (seeds, d)
    # Each seed's averaged mean is an unbiased estimate of the posterior mean with a jitter of
    # a small fraction of sigma (~0.6% per seed here). Bound: the seed-to-seed spread, pooled
    # over parameters in units of sigma (12 degrees of freedom), as a Šidák-corrected t bound
    # over 6 parameters at a 1e-3 false-alarm rate (k = 5.4). No bias term: the fit starts at the
    # MAP, the posterior mean on this Gaussian posterior, and flipping the sign of every draw
    # mirrors the whole run about it, so each seed's mean is unbiased.
    standardised = (means - means.mean(0)) / target
    dof = standardised.size - standardised.shape[1]
    se = math.sqrt((standardised**2).sum() / dof) / math.sqrt(means.shape[0])
    z = (means.mean(0) - exact) / target / se
    assert np.all(np.abs(z) < sidak_z(means.shape[1], FALSE_ALARM, df=dof)), z
    # Every seed on its own (was: within 0.1 sigma, a measured margin), in units of sigma against
    # the other two seeds' spread (6 degrees of freedom); Šidák over the 18 tests at 1e-3 (k = 10.1).
    z, dof = _each_seed_z(means, exact, target)
    assert np.all(np.abs(z) < sidak_z(z.size, FALSE_ALARM, df=dof)), z


def test_meanfield_sigma_matches_expected_hessian_on_logistic(logistic_meanfield):
    # Opper & Archambeau: at the optimum sigma_i^-2 = E_q[H_ii]. Estimate E_q[H_ii] with S
    # draws from q, H_ii(z) = sum_n p_n (1 - p_n) a_ni^2 + 1 in closed form (a_n = (x_n, 1),
    # N(0, 1) priors): an oracle independent of the code's autodiff Hessian. Its Monte Carlo
    # SE gives the SE of 1/sqrt(E_q[H_ii]) by the delta method.
    run, fit = logistic_meanfield
    X = run.data["X"].numpy()
    A = np.hstack([X, np.ones((X.shape[0], 1))])
    # 20,000 draws: H_ii is right-skewed (skewness up to 3), and at 2,000 draws the t-statistic
    # of its mean has a heavy left tail (the 2,000 draws of seed 1 put one E_q[H_ii] 4.8 SE below
    # a 100,000-draw value); at 20,000 the oracle's SE is 0.2-0.8 of the fit's (~0.3 typically).
    S = 20_000
    generator = np.random.default_rng(1)
    h = []
    for _ in range(4):  # in four parts: (S, N) at once would be 90 MB
        z = fit.mean + fit.sd * generator.standard_normal((S // 4, A.shape[1]))  # (S / 4, d)
        p = 1.0 / (1.0 + np.exp(-(z @ A.T)))  # (S / 4, N)
        h.append((p * (1 - p)) @ (A**2) + 1.0)  # (S / 4, d)
    h = np.concatenate(h)  # (S, d)
    expected_h = h.mean(0)
    target = 1 / np.sqrt(expected_h)
    target_se = 0.5 * target * (h.std(0, ddof=1) / math.sqrt(S)) / expected_h
    ratio = fit.sd / target
    # The SE of the ratio has two independent parts: the fit's (sd_se, the seed-to-seed spread
    # pooled over the 31 parameters, 62 degrees of freedom) and the oracle's (normal). A Šidák
    # bound over the 31 parameters at 1e-3, k = 4.5 from Student-t(62) (conservative for the
    # sum). No bias term: the identity is exact at the ELBO's stationary point, and the stopped,
    # iterate-averaged fit shows no shortfall: over 8 independent fits (24 seeds) against a
    # 40,000-draw oracle, the mean error was -0.04% +- 0.03%, the z's had RMS 1.08 (t(62): 1.02).
    # (The bound was |ratio - 1| < 0.05, a measured margin.)
    se = ratio * np.sqrt((np.asarray(fit.info["sd_se"]) / fit.sd) ** 2 + (target_se / target) ** 2)
    k = sidak_z(len(ratio), FALSE_ALARM, df=len(ratio) * (fit.info["seeds"] - 1))
    assert np.all(np.abs(ratio - 1) < k * se), ((ratio - 1) / se, k)
    # The bound resolves the 5% (k SE is 1.7-2.2% here): a fit far off cannot pass for
    # lack of precision. (Failing this needs the pooled SE estimate over twice its expectation,
    # chi-square(62): never in practice.)
    assert np.all(k * se < 0.05), k * se


@pytest.mark.parametrize("name, seeds", [("seed_linear", 6), ("linear_correlated", 3)])
def test_expected_loss_collapses_sigma(name, seeds):
    # Three claims per parameter, on the average of `seeds` independent runs of 600 steps
    # (collapse_steps; the study runs 1000): log sigma trends down (the last-half slope is
    # negative), the final quarter sits below the first, and the final sigma is far below the
    # ELBO's optimum, the exact conditional sd 1/sqrt(Lambda_ii) of these Gaussian posteriors
    # (which the mean-field fits reach, tested above): under 5% of it, the claim's threshold.
    # One run cannot give its own SE: its log sigma wanders by an offset set in the first
    # steps that persists (seed-to-seed sd of the final log sigma ~0.04-0.07; the jitter about
    # the run's own trend line is ~0.005), so the SE is the seed-to-seed spread of each
    # quantity, pooled over the parameters (the optimiser steps log sigma in the same units for
    # each): d (seeds - 1) degrees of freedom, 5 and 12. One-sided bounds mean + k SE < bound,
    # Šidák over the 3 d tests (the two-sided k: a run whose true value sat on a bound would
    # pass at most 1 in 2000 times). Measured over 12 seeds, the closest are the final sigmas,
    # 30 SE under 5% (seed_linear's: 0.46 log units, 12 per-seed sds, against k = 8.7; 6.1 for
    # linear_correlated); the slopes sit 80-240 SE under 0, the quarters 120-420. So a correct run
    # fails this test about 1e-10 of the time (non-central t; 3e-7 if the sds were 20% larger
    # than measured). 6 seeds for seed_linear because 3 would leave 2 degrees of freedom: k = 55, and
    # the SE estimate alone would fail most runs.
    target = _conditional_sd(make_run(name))
    rows = []
    for seed in range(seeds):
        collapse = fit_expected_loss(make_run(name, seed=seed, collapse_steps=600))
        log_sigma = collapse.trajectory["log_sigma"]  # (T, d)
        quarter = len(log_sigma) // 4
        rows.append([
            collapse.info["log_sigma_slope_per_1000_steps"],
            log_sigma[-quarter:].mean(0) - log_sigma[:quarter].mean(0),
            np.log(collapse.sd / target),
        ])
    values = np.asarray(rows)  # (seeds, 3, d)
    d = values.shape[2]
    dof = d * (seeds - 1)
    mean = values.mean(0)  # (3, d)
    se = np.sqrt(((values - mean) ** 2).sum(axis=(0, 2)) / dof / seeds)[:, None]  # (3, 1)
    bound = np.array([0.0, 0.0, math.log(0.05)])[:, None]
    k = sidak_z(3 * d, FALSE_ALARM, df=dof)
    assert np.all(mean + k * se < bound), ((mean - bound) / se, k)


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
    # Losses with Monte Carlo noise only. The rule's loss test is one-sided at stop_loss_z = 2 SE,
    # so flat noise alone would read "still falling" in 2.3% of draws; the second half is the
    # first reversed, so the halves' means are equal and the z is 0 for any draws.
    noise = rng.normal(10.0, 1.0, 200)
    flat = np.concatenate([noise, noise[::-1]])
    falling = flat + np.linspace(1.0, 0.0, 400)  # the same noise on a trend 5.0 SEs deep between the halves
    still = torch.ones(5)
    assert converged(flat, still, still * 1.005, s)
    assert not converged(falling, still, still * 1.005, s)
    assert not converged(flat, still, still * torch.tensor([1.02, 1.02, 1.02, 1.0, 1.0]), s)  # median drift 2%
    assert not converged(flat, still, still * torch.tensor([1.04, 1.0, 1.0, 1.0, 1.0]), s)  # one sigma 4%


def _halves(rng, d, parts, noise, trend=None):
    """Sub-block means of sigma over the two halves of a window: 1 plus N(0, noise^2) noise,
    shapes (parts, d) each, the second half multiplied by ``1 + trend``."""
    first = 1.0 + noise * torch.as_tensor(rng.standard_normal((parts, d)))
    second = 1.0 + noise * torch.as_tensor(rng.standard_normal((parts, d)))
    if trend is not None:
        second = second * (1.0 + trend)
    return first, second


def test_the_drift_se_matches_the_spread_of_pure_noise():
    from study.methods.svi import drift_standard_error

    # Every coordinate has the same noise, so the spread of the drift over 4,000 coordinates
    # is its true SE. The mean of se^2 estimates the same variance: their ratio is 1 within
    # 4 SEs of the comparison (relative SE of a variance from n draws sqrt(2/n): 2.2% for the
    # empirical variance, under 1% for the mean of se^2 (8 sub-blocks a half, 14 dof each).
    rng = np.random.default_rng(1)
    first, second = _halves(rng, 4000, 8, 0.02)
    drift = second.mean(0) / first.mean(0) - 1.0
    se = drift_standard_error(first, second)
    ratio = float((se**2).mean() / drift.var())
    assert abs(ratio - 1.0) < 4 * math.sqrt(2 / 4000 + 2 / (14 * 4000)), ratio


def test_the_stopping_rule_waits_for_a_trend_but_not_for_noise_across_many_sigmas():
    from study.core.settings import Settings
    from study.methods.svi import converged, drift_beyond_noise, drift_noise_limit, drift_standard_error

    s = Settings.make()
    rng = np.random.default_rng(2)
    noise = rng.normal(10.0, 1.0, 200)
    flat = np.concatenate([noise, noise[::-1]])
    # 1,000 sigmas with noise alone: sub-block sd 3%, so each drift has an SE near 1.5% and
    # the largest of 1,000 is near 3.2 SE, about 5%, above the fixed 2.5% bound. The old rule
    # (no sub-blocks, no SE) waits for ever; the noise-aware one stops. The Šidák bound
    # (Student-t on 14 dof at d = 1,000: 5.9 SE) holds for all 1,000 with probability 95%.
    first, second = _halves(rng, 1000, 8, 0.03)
    a, b = first.mean(0), second.mean(0)
    assert float((b / a - 1).abs().max()) > s.stop_sigma_drift_max
    assert not converged(flat, a, b, s)
    assert converged(flat, a, b, s, first, second)
    assert drift_beyond_noise(b / a - 1, drift_standard_error(first, second), 14) == 0.0
    assert drift_noise_limit(1000) == pytest.approx(4.05, abs=0.01)
    assert drift_noise_limit(1000, 14) > 5.5
    # Ten of them still moving by 8% with little noise: not converged, and the drift beyond
    # noise is that 8%.
    trend = torch.zeros(1000)
    trend[:10] = 0.08
    first, second = _halves(rng, 1000, 8, 0.002, trend)
    a, b = first.mean(0), second.mean(0)
    assert not converged(flat, a, b, s, first, second)
    assert drift_beyond_noise(b / a - 1, drift_standard_error(first, second), 14) == pytest.approx(0.08, abs=0.005)
    # Every sigma drifting by 1.5% in the same direction: a systematic trend under noise of
    # 1.5% SE each; the signed median catches it.
    first, second = _halves(rng, 1000, 8, 0.03, torch.full((1000,), 0.015))
    assert not converged(flat, first.mean(0), second.mean(0), s, first, second)


def test_a_converged_fit_stops_before_the_cap_and_keeps_its_window():
    from study.methods.svi import optimise

    # The study's own schedule (cap 3000, 32 particles): there the rule passes a check about
    # every other time once sigma has settled: 8 master seeds stopped after 500-800 steps;
    # a cap of 800 with 8 particles was reached in 2 of 12 seeds, so the test would be flaky.
    run = make_run("seed_linear", svi_steps=3000, particles=32, svi_seeds=1, draws=10, elbo_draws=10, curvature_draws=16)
    result = optimise(run, "svi_meanfield")
    assert result.steps < 3000 and result.steps % run.settings.check_every == 0
    assert len(result.loss) == result.steps and result.record_steps[-1] == result.steps - 1
    assert result.averaged_steps >= 0.2 * result.steps
    # Constant-rate runs (expected loss: sigma collapses) never stop early.
    collapse = optimise(run, "expected_loss", include_prior=False, include_entropy=False, constant_lr=0.05, steps=800)
    assert collapse.steps == 800


def test_sigma_starts_at_the_diagonal_laplace_sd():
    # set_guide_scales writes the flat start into AutoNormal's scales, site by site, in the
    # joint's flat order: read back through guide_loc_scale it is the same vector.
    from study.methods.laplace import map_and_hessian
    from study.methods.svi import guide_loc_scale, set_guide_scales, sigma_start

    run = make_run("eight_schools-eight_schools_noncentered")
    sd, where = sigma_start(run)
    expected = map_and_hessian(run)["hessian"].diagonal().rsqrt()
    assert where.startswith("diagonal Laplace")
    torch.testing.assert_close(sd, expected)
    pyro.clear_param_store()
    guide = AutoNormal(run.spec.model, init_scale=0.1)
    guide(**run.data)
    set_guide_scales(guide, run, sd)
    torch.testing.assert_close(guide_loc_scale(guide, run)[1], sd)
    # Settings can turn it off: then sigma starts at init_scale.
    assert sigma_start(make_run("eight_schools-eight_schools_noncentered", sigma_start="scale"))[0] is None


def test_the_loc_scale_reader_reads_what_the_guide_holds_bit_for_bit():
    # The fit reads the guide after every step through loc_scale_reader: it must hold the
    # tensors the optimiser updates in place, so that after steps it still returns exactly
    # what the guide's own attributes hold (a model with sites of several shapes and
    # constraints: eight schools' mu, tau > 0, theta_tilde[8]).
    from operator import attrgetter

    from pyro.infer import SVI

    from study.methods.optim import ScaledLocAdam
    from study.methods.svi import loc_scale_reader

    run = make_run("eight_schools-eight_schools_noncentered")
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(run.spec.model, init_scale=0.1)
    guide(**run.data)
    read = loc_scale_reader(guide, run)
    svi = SVI(run.spec.model, guide, ScaledLocAdam(guide, lr=0.05), Trace_ELBO())
    before = read()
    for _ in range(3):
        svi.step(**run.data)
    loc, scale = read()
    expected_loc, expected_scale = (
        torch.cat([attrgetter(site.name)(params).detach().reshape(-1) for site in run.joint.sites])
        for params in (guide.locs, guide.scales)
    )
    assert torch.equal(loc, expected_loc) and torch.equal(scale, expected_scale)
    assert not torch.equal(loc, before[0]) and not torch.equal(scale, before[1])


def test_the_sigma_start_moves_the_start_not_the_answer():
    # From init_scale and from 1/sqrt(H_ii), the stopped, averaged fit must reach the same sigma.
    # Eight schools (non-centred) is not Gaussian in tau, so E_q[H_ii] differs from H_ii at the
    # MAP and the warm start is not the answer. Each difference is in units of the two fits'
    # combined SE (their seed-to-seed spread, pooled: sd_se, 2 x 10 dof each, so Student-t(20)
    # is conservative); a Šidák bound over the 10 parameters at 1e-3. The two fits share their
    # seeds (common random numbers), which makes the difference smaller than these SEs, never
    # larger: a start the fit has not forgotten is what would fail.
    from study.methods.svi import fit_svi_meanfield

    name = "eight_schools-eight_schools_noncentered"
    warm = fit_svi_meanfield(make_run(name))
    cold = fit_svi_meanfield(make_run(name, sigma_start="scale"))
    assert warm.info["sigma_start"].startswith("diagonal Laplace")
    assert cold.info["sigma_start"] == "init_scale 0.1"
    se = np.hypot(np.asarray(warm.info["sd_se"]), np.asarray(cold.info["sd_se"]))
    z = (warm.sd - cold.sd) / se
    assert np.all(np.abs(z) < sidak_z(len(z), FALSE_ALARM, df=20)), z


def test_an_unknown_sigma_start_is_refused():
    from study.core.settings import Settings

    with pytest.raises(ValueError, match="sigma_start must be"):
        Settings.make(sigma_start="hessian")
