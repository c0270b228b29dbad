"""Laplace from the exact Hessian, and laplace-torch, against closed forms."""

import numpy as np
import pytest
import torch

from models.linear_correlated import NOISE_SCALE, PRIOR_SCALE
from study.methods.laplace import fit_laplace_diag, fit_laplace_full, map_and_hessian
from study.methods.laplace_torch import fit_laplace_torch_diag, fit_laplace_torch_full

from conftest import make_run


@pytest.fixture(scope="module")
def linear():
    run = make_run("linear_correlated")
    X = run.data["X"].numpy()
    precision = X.T @ X / NOISE_SCALE**2 + np.eye(X.shape[1]) / PRIOR_SCALE**2  # PRML eq. 3.54
    return run, precision


def test_laplace_full_is_the_exact_marginal_sd(linear):
    run, precision = linear
    fit = fit_laplace_full(run)
    exact = np.sqrt(np.diag(np.linalg.inv(precision)))
    np.testing.assert_allclose(fit.sd, exact, rtol=1e-6)
    posterior = run.spec.exact_posterior(run.data)
    np.testing.assert_allclose(fit.mean, posterior.mean.numpy(), rtol=1e-6, atol=1e-9)


def test_laplace_diag_is_one_over_root_precision_diagonal(linear):
    run, precision = linear
    fit = fit_laplace_diag(run)
    np.testing.assert_allclose(fit.sd, 1.0 / np.sqrt(np.diag(precision)), rtol=1e-6)


def test_diag_is_below_full_when_correlated(linear):
    run, _ = linear
    full, diag = fit_laplace_full(run), fit_laplace_diag(run)
    assert np.all(diag.sd < full.sd)  # PRML 10.1.2: conditional sd < marginal sd


@pytest.mark.parametrize("name", ["linear_correlated", "seed_linear", "logistic_breast_cancer"])
def test_laplace_torch_agrees_with_exact_hessian_on_glms(name):
    # For a GLM the GGN laplace-torch uses is the exact Hessian of -log p.
    run = make_run(name)
    np.testing.assert_allclose(fit_laplace_torch_full(run).sd, fit_laplace_full(run).sd, rtol=1e-6)
    np.testing.assert_allclose(fit_laplace_torch_diag(run).sd, fit_laplace_diag(run).sd, rtol=1e-6)


def test_laplace_torch_diag_takes_backpack_where_it_applies_and_matches_the_default(monkeypatch):
    # BackPack's diagonal GGN on the tanh network equals laplace-torch's default backend's
    # (both exact); a module BackPack cannot extend (the logistic GLM's BinaryLogits) falls
    # back to the default on a fresh module and still matches the exact Hessian (above).
    import laplace.curvature

    run = make_run("bnn_regression")
    fast = fit_laplace_torch_diag(run)
    assert fast.info["backend"] == "BackPackGGN"

    class Unsupported:
        def __init__(self, *args, **kwargs):
            raise NotImplementedError

    monkeypatch.setattr(laplace.curvature, "BackPackGGN", Unsupported)
    default = fit_laplace_torch_diag(run)
    assert default.info["backend"] != "BackPackGGN"
    np.testing.assert_allclose(fast.sd, default.sd, rtol=1e-10)
    assert fit_laplace_torch_diag(make_run("logistic_breast_cancer")).info["backend"] != "BackPackGGN"


# -- closed-form oracles in NumPy: the joint's derivatives, not the code's own -------------------


def _logistic_design(run):
    """``(A, y)``: the design with a column of ones for the intercept (flat order ``w``, then ``b``)."""
    X, y = run.data["X"].numpy(), run.data["y"].numpy()
    return np.hstack([X, np.ones((X.shape[0], 1))]), y


def _logistic_gradient_and_hessian(A, y, z):
    """Of U(z) = -sum_n [y_n a_n.z - log(1 + exp(a_n.z))] + |z|^2 / 2 (N(0, 1) priors), in NumPy."""
    p = 1.0 / (1.0 + np.exp(-(A @ z)))
    gradient = A.T @ (p - y) + z
    hessian = A.T @ (A * (p * (1 - p))[:, None]) + np.eye(A.shape[1])
    return gradient, hessian


@pytest.fixture(scope="module")
def logistic_map():
    run = make_run("logistic_breast_cancer")
    return run, map_and_hessian(run)


def test_logistic_map_is_stationary_by_the_closed_form_gradient(logistic_map):
    run, found = logistic_map
    A, y = _logistic_design(run)
    z = found["z"].numpy()
    gradient, hessian = _logistic_gradient_and_hessian(A, y, z)
    # Newton's last step from here is H^-1 g: far below any sd of the posterior (1e-6 of the smallest).
    newton_step = np.linalg.solve(hessian, gradient)
    assert np.all(np.abs(newton_step) < 1e-6 * np.sqrt(np.diag(np.linalg.inv(hessian)))), newton_step
    assert np.linalg.eigvalsh(hessian)[0] > 0


def test_logistic_hessian_is_the_closed_form(logistic_map):
    run, found = logistic_map
    A, y = _logistic_design(run)
    _, expected = _logistic_gradient_and_hessian(A, y, found["z"].numpy())
    np.testing.assert_allclose(found["hessian"].numpy(), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # Away from the MAP too, and the gradient: a random point, exact up to round-off.
    z = np.random.default_rng(0).normal(0, 0.5, A.shape[1])
    gradient, hessian = _logistic_gradient_and_hessian(A, y, z)
    _, grad = run.joint.potential_and_grad(torch.as_tensor(z))
    np.testing.assert_allclose(grad.numpy(), gradient, rtol=1e-9, atol=1e-9 * np.abs(gradient).max())
    np.testing.assert_allclose(run.joint.hessian(torch.as_tensor(z)).numpy(), hessian,
                               rtol=1e-9, atol=1e-9 * np.abs(hessian).max())
    # laplace_full / laplace_diag are the closed form's sqrt((H^-1)_ii) and 1/sqrt(H_ii) at the MAP.
    run.cache.clear()
    _, at_map = _logistic_gradient_and_hessian(A, y, found["z"].numpy())
    np.testing.assert_allclose(fit_laplace_full(run).sd, np.sqrt(np.diag(np.linalg.inv(at_map))), rtol=1e-7)
    np.testing.assert_allclose(fit_laplace_diag(run).sd, 1 / np.sqrt(np.diag(at_map)), rtol=1e-7)


def test_linear_gaussian_gradient_and_hessian_are_the_closed_form(linear):
    # U(w) = |y - X w|^2 / (2 s^2) + |w|^2 / (2 p^2): gradient -X^T (y - X w) / s^2 + w / p^2,
    # Hessian X^T X / s^2 + I / p^2 at every w.
    run, _ = linear
    X, y = run.data["X"].numpy(), run.data["y"].numpy()
    for w in np.random.default_rng(1).normal(0, 1, (3, X.shape[1])):
        _, grad = run.joint.potential_and_grad(torch.as_tensor(w))
        expected = -X.T @ (y - X @ w) / NOISE_SCALE**2 + w / PRIOR_SCALE**2
        np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
        hessian = X.T @ X / NOISE_SCALE**2 + np.eye(X.shape[1]) / PRIOR_SCALE**2
        np.testing.assert_allclose(run.joint.hessian(torch.as_tensor(w)).numpy(), hessian, rtol=1e-10)
    # The MAP solves the normal equations, to far below a posterior sd (the search stops at a
    # Newton decrement of ~1e-13 |U|, not at machine precision in z).
    w_map = np.linalg.solve(hessian, X.T @ y / NOISE_SCALE**2)
    marginal_sd = np.sqrt(np.diag(np.linalg.inv(hessian)))
    assert np.all(np.abs(map_and_hessian(run)["z"].numpy() - w_map) < 1e-6 * marginal_sd)


def test_map_search_above_the_size_guard_stops_when_a_block_no_longer_lowers_the_potential():
    # An ill-conditioned quadratic (curvatures 1e-6 to 1e2) that L-BFGS approaches slowly:
    # the large-model search runs blocks of iterations and stops after the first block that
    # lowers -log p by less than LARGE_MAP_DECREASE nat, never before; the full search runs on.
    from study.methods import laplace

    d = 2000
    curvature = torch.logspace(-6, 2, d, dtype=torch.float64)
    target = torch.linspace(-30.0, 30.0, d, dtype=torch.float64)

    class Quadratic:
        def __init__(self):
            self.calls = 0

        def log_joint(self, z):
            self.calls += 1
            return -0.5 * (curvature * (z - target) ** 2).sum()

    block_ends = []
    original_step = torch.optim.LBFGS.step

    def recording_step(self, closure):
        out = original_step(self, closure)
        with torch.no_grad():
            block_ends.append(float(-fast.log_joint(self.param_groups[0]["params"][0])))
        return out

    fast, full = Quadratic(), Quadratic()
    start = torch.zeros(d, dtype=torch.float64)
    torch.optim.LBFGS.step = recording_step
    try:
        end = laplace._lbfgs(fast, start, early_stop=True)
    finally:
        torch.optim.LBFGS.step = original_step
    start_potential = float(0.5 * (curvature * target**2).sum())
    drops = -np.diff([start_potential] + block_ends)
    assert len(drops) >= 2 and drops[-1] < laplace.LARGE_MAP_DECREASE
    assert (drops[:-1] >= laplace.LARGE_MAP_DECREASE).all()
    exact = laplace._lbfgs(full, start)
    assert fast.calls < full.calls
    assert float(-fast.log_joint(end)) >= float(-full.log_joint(exact)) - 1e-9


@pytest.mark.parametrize("name", ["logistic_breast_cancer", pytest.param("bnn_regression", marks=pytest.mark.slow)])
def test_the_traced_map_search_ends_where_the_eager_one_ends(name, monkeypatch):
    # find_map runs L-BFGS on a trace of -log p that reproduces it bit for bit
    # (study.core.jit.exact_trace): the MAP, and so every fit started from it, must not move.
    import pyro

    from study.core import jit
    from study.methods import laplace

    found = {}
    for mode in ("traced", "eager"):
        if mode == "eager":
            monkeypatch.setattr(laplace, "exact_trace", lambda fn, points: (fn, False))
        pyro.set_rng_seed(0)
        run = make_run(name, quick=True)
        assert mode == "eager" or jit.exact_trace(lambda z: -run.joint.log_joint(z), [run.joint.init_z])[1]
        found[mode] = laplace.find_map(run)
    assert torch.equal(found["traced"]["z"], found["eager"]["z"])
    assert found["traced"]["start_potentials"] == found["eager"]["start_potentials"]


def test_newton_stops_when_its_step_no_longer_moves_the_point():
    # In float32 the gradient at the mode is round-off the decrement test cannot see past; the
    # line search then accepted a step that left z as it was, 50 times over (a dense Hessian each).
    import pyro
    import pyro.distributions as dist

    from models import ModelSpec
    from study.core.context import ModelRun
    from study.core.settings import Settings
    from study.methods.laplace import find_map

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), 1000.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, 0.1), obs=y)

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        y = 1000.3 + 0.1 * torch.randn(50, generator=torch.Generator().manual_seed(0))
        spec = ModelSpec(name="float32_mean", pretty_name="float32 mean", model=model, data=lambda: {"y": y})
        found = find_map(ModelRun.create(spec, Settings.make(quick=True)))
    finally:
        torch.set_default_dtype(previous)
    assert found["newton_steps"] <= 2
    assert abs(float(found["z"][0]) - float(y.mean())) < 1e-3


def test_a_map_search_that_leaves_what_the_trace_reproduces_is_run_again_eagerly(monkeypatch):
    # A branch of the model taken at no start is fixed in the trace; where the L-BFGS path ends
    # in such a region, the end point's value and gradient differ and the eager search decides.
    import pyro
    import pyro.distributions as dist

    from models import ModelSpec
    from study.core.context import ModelRun
    from study.core.settings import Settings
    from study.methods import laplace

    def model():
        x = pyro.sample("x", dist.Normal(torch.tensor(0.0), 10.0))
        # Python control flow on a value: below 2 the density pulls towards 5, above it towards 3.
        target = 5.0 if float(x) < 2.0 else 3.0
        pyro.factor("pull", -0.5 * (x - target) ** 2)

    spec = ModelSpec(name="branching", pretty_name="branching", model=model, data=dict)
    run = ModelRun.create(spec, Settings.make(quick=True))
    eager_runs = []
    original = laplace._lbfgs

    def recording(joint, start, early_stop=False, potential=None):
        eager_runs.append(potential is None)
        return original(joint, start, early_stop, potential)

    monkeypatch.setattr(laplace, "_lbfgs", recording)
    found = laplace.find_map(run)
    assert eager_runs == [False, True]  # the traced path ended near 5, where the model says 3
    assert abs(float(found["z"][0]) - 3.0 / (1 + 1 / 100) ) < 1e-6
