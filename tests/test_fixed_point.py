"""The mean-field fixed point sigma_i^-2 = E_q[H_ii] (Opper & Archambeau 2009), checked per parameter."""

import numpy as np
import pytest

from models._glm import posterior_precision
from models.linear_correlated import NOISE_SCALE, PRIOR_SCALE
from study.checks.fixed_point import Curvature, diagnose, expected_curvature, fixed_point_residual

from conftest import make_run, sidak_z


@pytest.fixture(scope="module")
def linear(linear_meanfield):
    return linear_meanfield  # the session's shared fit (tests/conftest.py)


def test_residual_is_within_its_se_on_linear_correlated(linear):
    run, fit = linear
    fixed = fit.info["fixed_point"]
    # The Hessian of a Gaussian log density is constant: E_q[H_ii] = Lambda_ii exactly, no MC error.
    precision = posterior_precision(run.data["X"], PRIOR_SCALE, NOISE_SCALE).numpy()
    np.testing.assert_allclose(fixed["expected_hessian"], np.diag(precision), rtol=1e-10)
    assert np.allclose(fixed["expected_hessian_se"], 0, atol=1e-9)
    # So the SE is sigma's seed-to-seed error alone (3 seeds, pooled over 6 parameters).
    assert fit.info["seeds"] == 3 and fixed["se_includes_sigma"]
    # Delta method: r + 1 = sigma^2 Lambda_ii, so SE(r) = 2 (1 + r) SE(sigma) / sigma.
    np.testing.assert_allclose(fixed["se"], 2 * (1 + np.asarray(fixed["r"])) * fit.info["sd_rel_se"], rtol=1e-9)
    # The SE is estimated from 3 seeds pooled over 6 parameters (12 degrees of freedom): each z is
    # Student-t(12). A Šidák bound over the 6 parameters: a false alarm 1 in 1000 runs (k = 5.4;
    # the issue's |z| < 3 without a correction fails ~6% of the time after any change of draws).
    assert np.all(np.abs(fixed["z"]) < sidak_z(6, 1e-3, df=12)), fixed["z"]
    assert fixed["diagnosis"]["verdict"] == "fixed point"


def test_seed_average_and_its_standard_error(linear):
    from study.methods.svi import seed_standard_errors

    _, fit = linear
    per_seed = np.asarray(fit.info["sd_per_seed"])
    assert per_seed.shape == (3, 6)
    np.testing.assert_allclose(fit.sd, per_seed.mean(0))
    # The fit reports seed_standard_errors of its per-seed sigmas (whose formula the test below
    # checks against independent repeats, not against a copy of itself).
    errors = seed_standard_errors(per_seed)
    assert fit.info["sd_rel_se"] == pytest.approx(errors["rel_se"])
    np.testing.assert_allclose(fit.info["sd_se"], fit.sd * fit.info["sd_rel_se"])
    np.testing.assert_allclose(fit.info["sd_se_per_parameter"], errors["se_per_parameter"])
    # The seeds are independent: the three runs differ.
    assert np.all(per_seed.std(0) > 0)


def test_seed_standard_error_matches_the_spread_of_independent_repeats():
    # A closed-form case: K = 3 seeds of d = 6 parameters whose sigmas scatter by a relative
    # tau = 0.1% about truths c_i spanning four decades (the noise the pooling assumes: relative,
    # the same for every parameter). The seed average of parameter i then has sd exactly
    # c_i tau / sqrt(K). Over R = 4000 independent repeats the reported SE must be that spread:
    # mean(se_i^2) against mean((average_i - c_i)^2), per parameter. Both sides are averages of
    # R independent terms, so their ratio's SE follows from the repeats' own spread (delta
    # method); a Šidák bound over the 6 parameters at 1e-3 (k = 3.8). A wrong formula is far
    # outside it: dividing by d K instead of d (K - 1) makes the ratio 2/3, forgetting the
    # sqrt(K) makes it 3, an absolute instead of a relative pooling misses by the c_i ratios.
    from study.methods.svi import seed_standard_errors

    R, K, d, tau = 4000, 3, 6, 1e-3
    truth = np.geomspace(1e-3, 10.0, d)
    rng = np.random.default_rng(0)
    values = truth * (1.0 + tau * rng.standard_normal((R, K, d)))
    reported = np.stack([seed_standard_errors(v)["se"] for v in values]) ** 2  # (R, d)
    actual = (values.mean(1) - truth) ** 2  # (R, d)
    ratio = reported.mean(0) / actual.mean(0)
    relative_se = np.sqrt(
        reported.var(0, ddof=1) / (R * reported.mean(0) ** 2) + actual.var(0, ddof=1) / (R * actual.mean(0) ** 2)
    )
    z = (ratio - 1.0) / (ratio * relative_se)
    assert np.all(np.abs(z) < sidak_z(d, 1e-3)), (ratio, z)
    # The pooled SE has d (K - 1) = 12 degrees of freedom: (average - c) / se is Student-t(12),
    # whose variance is 12 / 10. Averaged over the R repeats (independent; within a repeat the
    # d values share one SE, so the repeats' spread of their mean gives the SE), one test at
    # 1e-3 (k = 3.3).
    t2 = (actual / reported).mean(1)  # (R,)
    assert abs(t2.mean() - 12 / 10) < sidak_z(1, 1e-3) * t2.std(ddof=1) / np.sqrt(R), t2.mean()


def _residual_for(sd_factor, change, drifting=False, minibatch=False):
    """The exact linear_correlated curvature with sigma scaled by ``sd_factor``."""
    run = make_run("linear_correlated")
    precision = posterior_precision(run.data["X"], PRIOR_SCALE, NOISE_SCALE).numpy()
    sd = sd_factor / np.sqrt(np.diag(precision))
    curvature = expected_curvature(run.joint, np.zeros(6), sd, 16, seed=0)
    residual = fixed_point_residual(curvature, 0.004)
    return residual, diagnose(residual, np.full(6, change), run.joint.param_names, minibatch=minibatch)


def test_diagnosis_separates_optimiser_from_model():
    # sigma 4% too large and still falling by 1% per half-window: the optimiser stopped short.
    residual, verdict = _residual_for(1.04, -0.01)
    assert np.allclose(residual["r"], 1.04**2 - 1) and verdict["verdict"] == "not converged"
    assert len(verdict["moving"]) == 6
    # sigma a factor sqrt(32) too small and settled: what counting the likelihood once per
    # particle (32 particles) does; the objective is to blame.
    residual, verdict = _residual_for(32**-0.5, 0.0)
    assert verdict["verdict"] == "model" and len(verdict["off"]) == 6
    # At the fixed point: nothing is off.
    _, verdict = _residual_for(1.0, 0.0)
    assert verdict["verdict"] == "fixed point" and verdict["max_abs_r"] < 1e-12


def test_a_settled_minibatch_fit_off_its_fixed_point_is_not_blamed_on_the_objective():
    # The same settled sigma a factor sqrt(32) too small, from a fit on mini-batches: their ELBO
    # is unbiased, so the verdict is the optimiser's, and the text says why.
    _, verdict = _residual_for(32**-0.5, 0.0, minibatch=True)
    assert verdict["verdict"] == "not converged" and len(verdict["off"]) == 6
    assert "mini-batches" in verdict["text"] and "objective is not the likelier cause" in verdict["text"]
    # At the fixed point a mini-batch fit is at the fixed point.
    _, verdict = _residual_for(1.0, 0.0, minibatch=True)
    assert verdict["verdict"] == "fixed point"


def test_se_of_the_hessian_part_is_the_spread_of_pair_means():
    h = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0], [2.0, 3.0]])  # (pairs, d)
    curvature = Curvature(mean=np.zeros(2), sd=np.array([0.5, 0.5]), hessian_diagonal=h,
                          blocks=np.zeros((1, 4, 4)), counts=np.array([8]))
    residual = fixed_point_residual(curvature, None)
    np.testing.assert_allclose(residual["expected_hessian"], h.mean(0))
    np.testing.assert_allclose(residual["expected_hessian_se"], h.std(0, ddof=1) / 2)
    np.testing.assert_allclose(residual["r"], 0.25 * h.mean(0) - 1)
    np.testing.assert_allclose(residual["se"], 0.25 * h.std(0, ddof=1) / 2)
    assert not residual["se_includes_sigma"]


def test_residual_is_within_its_se_on_logistic_breast_cancer(logistic_meanfield):
    # Non-Gaussian: E_q[H_ii] varies over q, so the SE has both parts (Hessian draws and seeds).
    # Measured with 16384 draws on this fit: every |r| < 0.025 (sigma within ~1%).
    run, fit = logistic_meanfield
    fixed = fit.info["fixed_point"]
    # The draws are shared out over the seeds, each checked at its own q (rounded up to pairs).
    K = fit.info["seeds"]
    assert run.settings.curvature_draws <= fixed["draws"] < run.settings.curvature_draws + 2 * K
    assert fixed["seeds"] == K and fixed["se_includes_sigma"]
    assert np.all(np.asarray(fixed["expected_hessian_se"]) > 0)
    # 31 parameters; the seed part of the SE has 31 x 2 = 62 degrees of freedom (t(62)), the
    # Hessian-draw part 512 pairs. A Šidák bound over 31 at a 1e-3 false-alarm rate (k = 4.5).
    assert np.all(np.abs(fixed["z"]) < sidak_z(31, 1e-3, df=62)), fixed["z"]
    assert fixed["diagnosis"]["verdict"] == "fixed point"


def test_report_shows_unmeasured_and_nonpositive_curvature_as_a_dash_without_warnings(tmp_path):
    # A network's check measures a subset (NaN elsewhere) and can find E_q[H_ii] <= 0; the
    # figure and table leave those out instead of taking square roots of them.
    import warnings

    from study.core.results import Fit, ModelResult
    from study.report.topics.fixed_point import fixed_point_blocks, inverse_sqrt

    expected = np.array([4.0, np.nan, -2.0, 0.0, 0.25])
    np.testing.assert_array_equal(inverse_sqrt(expected), [0.5, np.nan, np.nan, np.nan, 2.0])
    names = [f"w[{k}]" for k in range(5)]
    sd = np.array([0.5, 0.3, 0.2, 0.1, 2.0])
    r = sd**2 * expected - 1
    fixed = {"expected_hessian": expected.tolist(), "expected_hessian_se": [0.1] * 5, "r": r.tolist(),
             "se": [0.05] * 5, "z": (r / 0.05).tolist(), "draws": 64, "diagnosis": {"text": "a test"}}
    fit = Fit(model="m", method="svi_meanfield", param_names=names, mean=np.zeros(5), sd=sd,
              info={"fixed_point": fixed, "seeds": 1})
    diag = Fit(model="m", method="laplace_diag", param_names=names, mean=np.zeros(5), sd=sd)
    model = ModelResult(name="m", title="m", description="", param_names=names,
                        fits={"svi_meanfield": fit, "laplace_diag": diag})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        blocks = fixed_point_blocks(model, tmp_path)
    table = next(b for b in blocks if hasattr(b, "rows"))
    assert [row[2] for row in table.rows] == ["0.5", "–", "–", "–", "2"]
    assert (tmp_path / "fixed-point-m.png").exists()


def _double_well_run():
    """A 1-D double well, U(z) = (z^2 - 1)^2 + z^2 / 200: modes near z = +1 and z = -1."""
    import pyro
    import pyro.distributions as dist
    import torch

    from models import ModelSpec
    from study.core.context import ModelRun
    from study.core.settings import Settings

    def model():
        z = pyro.sample("z", dist.Normal(torch.tensor(0.0), 10.0))
        pyro.factor("well", -((z**2 - 1.0) ** 2))

    torch.set_default_dtype(torch.float64)
    return ModelRun.create(ModelSpec(name="double_well", model=model, data=dict), Settings.make(curvature_draws=4096))


def _fixed_point_sigma(mu: float) -> float:
    """sigma with sigma^-2 = E_q[U''] at q = N(mu, sigma^2), by Gauss-Hermite quadrature and iteration."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / weights.sum()
    sigma = 0.3
    for _ in range(200):
        z = mu + sigma * nodes
        sigma = float(np.sum(weights * (12 * z**2 - 4 + 0.01))) ** -0.5
    return sigma


def test_seeds_in_different_modes_are_each_checked_at_their_own_q():
    # Two seeds settle in the two modes, each exactly at its fixed point. Checked per seed and pooled,
    # the residual is 0 within its SE; at the averaged q (mean 0, between the modes, where U'' < 0) it
    # would be far off. This is how a network's seeds (hidden units swapped) used to be checked.
    from study.methods.svi import SVIRun, seed_fixed_points

    run = _double_well_run()
    mu = 1.1
    sigma = _fixed_point_sigma(mu)

    def seed_run(m):
        return SVIRun(mean=np.array([m]), sd=np.array([sigma]), last_mean=np.array([m]), last_sd=np.array([sigma]),
                      steps=1, loss=np.zeros(1), record_steps=np.zeros(1), log_sigma=np.zeros((1, 1)),
                      sigma_drift=0.0, wall_seconds=0.0, init_from="", jit=False, sigma_changes=np.zeros(1))

    plan = {"fixed_point": "hessian", "subsample_size": None}
    pooled, per_seed = seed_fixed_points(run, [seed_run(mu), seed_run(-mu)], 1e-4, plan, np.zeros(1))
    assert [p["verdict"] for p in per_seed] == ["fixed point", "fixed point"]
    assert pooled["diagnosis"]["verdict"] == "fixed point"
    # The Monte Carlo error of E_q[U''] over 2 x 2048 antithetic draws, a Šidák-free single test (k = 4).
    assert abs(pooled["r"][0]) < 4 * pooled["se"][0]
    # The averaged q, checked as before: sigma is nowhere near 1/sqrt(E_q[U'']) there.
    averaged = expected_curvature(run.joint, np.array([0.0]), np.array([sigma]), 4096, 0)
    off = fixed_point_residual(averaged, 1e-4)
    assert abs(off["z"][0]) > 10 * 4
