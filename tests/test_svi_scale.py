"""Mean-field SVI on large networks: the large-model plan, data subsampling, the gradient-only fixed point."""

import numpy as np
import pytest
import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample
import torch

from conftest import make_run
from study.checks.fixed_point import expected_curvature, price_residual, residual_by_site
from study.methods import svi


def test_price_estimator_matches_exact_expected_hessian_diagonal():
    """E_q[H_ii] from gradients (Price) equals the exact HVP estimate, within their joint SE."""
    pyro.set_rng_seed(0)  # the network's init_to_sample start, whatever ran before in the process
    run = make_run("bnn_regression")
    rng = np.random.default_rng(0)
    mean = run.joint.init_z.numpy() + 0.1 * rng.standard_normal(run.joint.dim)
    sd = np.full(run.joint.dim, 0.05)
    exact = expected_curvature(run.joint, mean, sd, 256, seed=1)
    h_exact = exact.hessian_diagonal.mean(0)
    h_exact_se = exact.hessian_diagonal.std(0, ddof=1) / np.sqrt(exact.hessian_diagonal.shape[0])
    price = price_residual(run.joint, mean, sd, pairs=1024, seed=2, chunk=256)
    h_price, h_price_se = np.asarray(price["expected_hessian"]), np.asarray(price["expected_hessian_se"])
    # Independent draws: 4.5 joint SEs on each of 31 coordinates, two-sided 7e-6 each, a false alarm
    # in under 0.03% of runs.
    joint_se = np.sqrt(h_exact_se**2 + h_price_se**2)
    assert np.all(np.abs(h_price - h_exact) <= 4.5 * joint_se + 1e-9), np.abs(h_price - h_exact) / joint_se
    # Precise enough to matter (a pair's noise is sum_j H_ij^2 sigma_j^2 / sigma_i^2: large off-diagonals).
    assert np.median(h_price_se / np.abs(h_price)) < 0.2
    r = np.asarray(price["r"])
    np.testing.assert_allclose(r, sd**2 * h_price - 1.0)
    by_site = residual_by_site(run.joint, price)
    assert set(by_site) == {s.name for s in run.joint.sites}
    assert sum(v["n"] for v in by_site.values()) == run.joint.dim


def test_price_residual_per_layer_is_a_mean_not_the_biased_median():
    """At the exact fixed point of a Gaussian (sigma_i^-2 = H_ii) the per-site mean residual is 0
    within its SE; the median of the skewed per-coordinate estimates is not (chi2(32)/32's median)."""
    import pyro
    import pyro.distributions as dist
    from scipy.stats import chi2

    from study.core.joint import FlatJoint

    d = 40_000
    precision = torch.linspace(0.5, 4.0, d, dtype=torch.float64)

    def model():
        pyro.sample("w", dist.Normal(torch.zeros(d, dtype=torch.float64), precision.rsqrt()).to_event(1))

    joint = FlatJoint(model, {})
    sd = precision.rsqrt().numpy()
    price = price_residual(joint, np.zeros(d), sd, pairs=32, seed=3)
    site = residual_by_site(joint, price)["w"]
    # The mean over pairs of per-pair means, over its SE from 32 pairs: a t with 31 degrees of
    # freedom; beyond 4.5 in 9e-5 of seeds (over 300 seeds at d = 4,000 the largest |t| was 4.3).
    assert abs(site["mean_r"]) <= 4.5 * site["mean_r_se"], site
    assert site["mean_r_se"] < 0.005
    # The median of d independent chi2(32)/32 - 1 sits at chi2.median(32)/32 - 1 = -0.0208, with
    # an SE of 1.2533 * sqrt(2/32) / sqrt(d) = 0.0016: within 4 of them of it, 13 of them from 0.
    # The reason the mean is the summary.
    bias = chi2.median(32) / 32 - 1
    assert abs(site["median_r"] - bias) < 4 * 1.2533 * np.sqrt(2 / 32) / np.sqrt(d), site


def test_scale_plan_small_and_large(monkeypatch):
    small = make_run("digits_mlp_1k")
    assert svi.scale_plan(small)["regime"] == "small" and svi.scale_plan(small)["lr_hold_fraction"] == 0.0
    monkeypatch.setattr(svi.plan, "LARGE_MODEL_DIM", 100)
    plan = svi.scale_plan(small)
    assert plan["regime"] == "large" and plan["fixed_point"] == "price"
    assert plan["lr_hold_fraction"] == svi.LARGE_LR_HOLD
    assert plan["subsample_size"] == svi.LARGE_SUBSAMPLE and plan["particles"] <= svi.LARGE_PARTICLES


def test_a_model_caps_the_particles_of_every_svi_fit():
    from dataclasses import replace

    import pytest

    network = make_run("digits_mlp_1k")
    assert network.spec.svi_particles == 8
    assert svi.particles(network) == 8 == svi.scale_plan(network)["particles"]
    linear = make_run("seed_linear")
    assert linear.spec.svi_particles is None
    assert svi.particles(linear) == linear.settings.particles == svi.scale_plan(linear)["particles"]
    # The cap never raises the settings' particles, and a bad cap is refused in one line.
    linear.spec = replace(linear.spec, svi_particles=10**6)
    assert svi.particles(linear) == linear.settings.particles
    linear.spec = replace(linear.spec, svi_particles=0)
    with pytest.raises(ValueError, match="svi_particles must be a positive int"):
        svi.particles(linear)


def test_subsampled_network_likelihood_is_scaled_to_the_full_data():
    run = make_run("digits_mlp_1k")
    n = run.data["X"].shape[0]
    trace = poutine.trace(run.spec.model).get_trace(**run.data, subsample_size=64)
    site = trace.nodes["y"]
    assert site["value"].shape == (64,)
    assert abs(float(site["scale"]) - n / 64) < 1e-12
    # The scaled mini-batch log-likelihood is unbiased for the full one: check it over many batches
    # at fixed weights (a draw of the prior).
    weights = {k: v["value"] for k, v in trace.nodes.items()
               if v["type"] == "sample" and not v["is_observed"] and not site_is_subsample(v)}
    conditioned = poutine.condition(run.spec.model, data=weights)
    full = poutine.trace(conditioned).get_trace(**run.data).nodes["y"]["fn"].log_prob(run.data["y"]).sum()
    torch.manual_seed(0)
    estimates = []
    for _ in range(200):
        node = poutine.trace(conditioned).get_trace(**run.data, subsample_size=64).nodes["y"]
        estimates.append(float(node["scale"] * node["fn"].log_prob(node["value"]).sum()))
    estimates = np.asarray(estimates)
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    # 4 SE: a false alarm in 6e-5 of runs (sampling without replacement only shrinks the variance).
    assert abs(estimates.mean() - float(full)) <= 4.0 * se


def test_large_networks_fit_in_float32_and_report_float64(monkeypatch):
    """In the large-model regime a network's mean-field and IVON fits run in float32 (``large_fit_dtype``).

    Its sigma must be what a float64 fit gives up to Monte Carlo noise: the float32 and
    float64 runs (different noise streams) may differ by no more than two float64 runs
    with different seeds do. One run object throughout: its MAP is searched once.
    """
    from dataclasses import replace

    import pyro
    import pytest

    from study.methods.ivon import fit_ivon

    monkeypatch.setattr(svi.plan, "LARGE_MODEL_DIM", 100)
    pyro.set_rng_seed(0)  # the MAP search starts from a draw of the prior (init_to_sample)
    run = make_run("digits_mlp_1k", svi_steps=400, svi_seeds=1)
    assert run.spec.large_fit_dtype == "float32" and svi.scale_plan(run)["dtype"] == "float32"
    assert svi.fit_dtype(run) == torch.float32
    single = svi.optimise(run, "svi_meanfield", seed=1)
    store = dict(pyro.get_param_store().named_parameters())
    assert store and all(v.dtype == torch.float32 for v in store.values())
    assert single.mean.dtype == single.sd.dtype == np.float64 and np.all(np.isfinite(single.sd))
    ivon = fit_ivon(run)
    assert ivon.info["fit_dtype"] == "float32"
    assert ivon.sd.dtype == np.float64 and np.all(np.isfinite(ivon.sd)) and np.all(ivon.sd > 0)

    run.spec = replace(run.spec, large_fit_dtype="float64")
    assert svi.fit_dtype(run) == torch.float64
    double = svi.optimise(run, "svi_meanfield", seed=1)
    assert all(v.dtype == torch.float64 for v in pyro.get_param_store().values())
    other_seed = svi.optimise(run, "svi_meanfield", seed=2)
    precision_gap = np.median(np.abs(np.log(single.sd / double.sd)))
    seed_gap = np.median(np.abs(np.log(other_seed.sd / double.sd)))
    # Medians over 1,210 weights: each is known to a few per cent of itself, so 1.5x the seed-to-seed
    # gap leaves room for that noise and still fails a float32 run off by more than the noise.
    assert precision_gap <= 1.5 * seed_gap, (precision_gap, seed_gap)
    assert seed_gap > 0  # the two seeds' noise differs (the comparison has a yardstick)

    # Below the regime's threshold every fit is float64, whatever the model asks for.
    run.spec = replace(run.spec, large_fit_dtype="float32")
    monkeypatch.setattr(svi.plan, "LARGE_MODEL_DIM", 10**6)
    assert svi.scale_plan(run)["dtype"] == "float64" and svi.fit_dtype(run) == torch.float64
    run.spec = replace(run.spec, large_fit_dtype="float16")
    monkeypatch.setattr(svi.plan, "LARGE_MODEL_DIM", 100)
    with pytest.raises(ValueError, match="large_fit_dtype must be one of"):
        svi.scale_plan(run)


def test_float32_fits_flush_subnormals_and_restore_the_default():
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 subnormal
    with svi.precision(torch.float32):
        assert float(tiny * 1.0) == 0.0 or not torch.set_flush_denormal(True)
    assert float(tiny * 1.0) > 0.0  # flushing ends with the fit
    with svi.precision(torch.float64):
        assert float(tiny * 1.0) > 0.0


def test_held_learning_rate_then_decays_to_its_end():
    from study.methods.optim import ScaledLocAdam

    steps, hold = 3000, 1500
    optimiser = ScaledLocAdam(None, lr=0.05, lr_decay=(0.0005 / 0.05) ** (1.0 / (steps - hold)), hold_steps=hold)
    rates = []
    for t in range(steps + 1):
        optimiser.steps = t
        rates.append(optimiser.current_lr)
    assert rates[0] == rates[hold] == 0.05 and rates[hold + 1] < 0.05
    assert abs(rates[steps] - 0.0005) < 1e-12

