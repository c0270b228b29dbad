"""The exact Hessian within a memory budget, and the MAP search's Newton steps by conjugate gradients.

A model written the way the README teaches, ``(X * w).sum(-1)``, holds an ``N x d``
temporary in every Hessian-vector product; the number of products per batched pass follows
from their measured bytes and the budget, and changes no bit of this model's Hessian. The
oracle for the MAP search is a plain dense Newton iteration written here with
``torch.autograd.functional.hessian``.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from models import ModelSpec
from study.compare import main
from study.core.context import ModelRun
from study.core.joint import HEAP_SLACK, FlatJoint
from study.core.memory import LiveBytes
from study.core.settings import Settings
from study.methods import laplace
from study.run.cache import fit_key

N, D = 300, 40


def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), 1.0).to_event(1))
    s = pyro.sample("s", dist.HalfNormal(torch.tensor(1.0, dtype=X.dtype)))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Normal((X * w).sum(-1), s), obs=y)


def data():
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=generator, dtype=torch.float64)
    w = torch.randn(D, generator=generator, dtype=torch.float64)
    return {"X": X, "y": X @ w + 0.5 * torch.randn(N, generator=generator, dtype=torch.float64)}


SPEC = ModelSpec(name="broadcast_regression", pretty_name="broadcast regression", model=model, data=data)


def test_live_bytes_counts_what_is_alive_at_once_not_what_was_ever_allocated():
    before = torch.ones(10_000)  # existed before the block: not counted
    with LiveBytes() as live:
        a = torch.ones(1000, dtype=torch.float64)
        del a
        b = torch.ones(1000, dtype=torch.float64)
        c = b + before[:1000]
        del b, c
    assert live.peak == 2 * 8000
    with LiveBytes() as live:
        x = torch.ones(5000, dtype=torch.float64) * 2.0  # ones and the product: both alive at the multiply
    assert live.peak == 2 * 40_000
    del x


class _ExactBytes(LiveBytes):
    TOLERANCE = 0.0  # every total that could set a peak is looked up: the exact peak


def _ode_products():
    """Three Hessian-vector products through a fixed-step ODE solve, as a function: thousands
    of small storages made and freed in the double backward pass, the workload that made the
    exact count slow."""
    from models._ode import rk4

    theta = torch.tensor([0.5, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    ys = rk4(lambda t, y: theta[:2] * y + theta[2] * y.flip(-1) * y, torch.ones(16, 2, dtype=torch.float64),
             [0.01 * k for k in range(80)])
    (grad,) = torch.autograd.grad(torch.stack(ys).pow(2).sum(), theta, create_graph=True)
    return lambda: torch.autograd.grad(grad, theta, torch.eye(3, dtype=torch.float64), retain_graph=True,
                                       is_grads_batched=True)


def _peak(counter, products) -> int:
    with counter:
        products()
    return counter.peak


def test_live_bytes_bounds_the_peak_from_above_within_its_tolerance():
    products = _ode_products()
    exact, bound = _peak(_ExactBytes(), products), _peak(LiveBytes(), products)
    assert exact > 16 * 2 * 8 * 3
    assert exact <= bound <= (1 + LiveBytes.TOLERANCE) * exact


def test_live_bytes_does_not_depend_on_the_addresses_the_allocator_hands_out():
    # The count sets the products per pass, and with them a Hessian's last bits: it must be
    # the same in every process, whatever was allocated before (a worker's earlier models).
    products = _ode_products()
    held, peaks = [], []
    for i in range(6):
        held.append(torch.empty(481 * (i + 1), dtype=torch.float64))  # another allocator state
        peaks.append(_peak(LiveBytes(), products))
    assert len(set(peaks)) == 1, peaks


def test_a_products_bytes_are_measured_and_hold_the_broadcast_temporary():
    joint = FlatJoint(model, data())
    joint.hessian(joint.init_z)
    # Each product through (X * w).sum(-1) holds at least one N x d temporary.
    assert joint.hvp_bytes >= N * D * 8


@pytest.mark.parametrize("products", [0, 1, 3, 7])
def test_the_budget_sets_the_products_per_pass_and_no_bit_of_the_hessian(products):
    z = 0.1 * torch.randn(D + 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    whole = FlatJoint(model, data(), memory_budget=10**12)
    expected = whole.hessian(z)
    assert whole.last_hessian_chunk == D + 1  # everything in one pass
    joint = FlatJoint(model, data(), memory_budget=10**12)
    joint.hessian(z)  # measures a product's bytes
    held = 3 * (D + 1) ** 2 * 8  # the d x d result and its symmetrisation
    # Room for `products` products at HEAP_SLACK times their bytes; with none, still one per pass.
    joint.memory_budget = held + products * HEAP_SLACK * joint.hvp_bytes
    got = joint.hessian(z)
    assert joint.last_hessian_chunk == max(1, products)
    assert torch.equal(got, expected)
    reference = torch.autograd.functional.hessian(lambda v: -joint.log_joint(v), z)
    torch.testing.assert_close(got, reference, rtol=1e-12, atol=1e-10)


def test_conjugate_gradient_solves_a_positive_definite_system_and_refuses_an_indefinite_one():
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    H = A @ A.T + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=generator, dtype=torch.float64)
    x, products = laplace.conjugate_gradient(lambda v: H @ v, b, max_iter=200)
    np.testing.assert_allclose((H @ x).numpy(), b.numpy(), rtol=0, atol=1e-9 * float(b.norm()))
    assert products <= 200
    indefinite = torch.diag(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    step, _ = laplace.conjugate_gradient(lambda v: indefinite @ v, torch.ones(3, dtype=torch.float64), max_iter=10)
    assert step is None


def _dense_newton_map(joint, start):
    """The oracle: Newton's method with the dense autograd Hessian, to the round-off floor."""
    z = start.clone()
    for _ in range(50):
        z_ = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(-joint.log_joint(z_), z_)
        H = torch.autograd.functional.hessian(lambda v: -joint.log_joint(v), z)
        step = torch.linalg.solve(H, grad)
        if float(grad @ step) < 1e-20:
            break
        z = z - step
    return z, torch.autograd.functional.hessian(lambda v: -joint.log_joint(v), z)


def test_where_the_hessian_takes_several_passes_the_map_search_builds_it_once_at_the_mode(monkeypatch):
    # A budget of one product per pass, so Newton steps go by conjugate gradients.
    probe = FlatJoint(model, data())
    probe.hessian(probe.init_z)
    budget = 3 * (D + 1) ** 2 * 8 + HEAP_SLACK * probe.hvp_bytes
    run = ModelRun.create(SPEC, Settings.make(quick=True, memory_budget=budget))
    calls = []
    real = FlatJoint.hessian
    monkeypatch.setattr(FlatJoint, "hessian", lambda self, z, hvp=None: calls.append(z) or real(self, z, hvp))
    found = laplace.find_map(run)
    assert run.joint.last_hessian_chunk == 1
    assert len(calls) == 1 and torch.equal(calls[0], found["z"])
    assert found["newton_cg_products"] > 0
    # The Hessian is the exact one at the point found ...
    exact = torch.autograd.functional.hessian(lambda v: -run.joint.log_joint(v), found["z"])
    np.testing.assert_allclose(found["hessian"].numpy(), exact.numpy(), rtol=1e-10, atol=1e-10)
    # ... and the point meets the search's stopping rule by the dense Newton decrement, so it
    # lies within what that rule allows of the mode that dense Newton reaches.
    potential, grad = run.joint.potential_and_grad(found["z"])
    floor = 1e-13 * abs(float(potential))
    assert float(grad @ torch.linalg.solve(exact, grad)) < floor
    z, _ = _dense_newton_map(run.joint, found["z"])
    smallest = float(torch.linalg.eigvalsh(exact)[0])
    np.testing.assert_allclose(found["z"].numpy(), z.numpy(), rtol=0, atol=np.sqrt(2 * floor / smallest))
    # Within the default budget the Hessian is one pass: the search solves each Newton step
    # with it, as it did before there was a budget, and ends at the same point.
    one_pass = laplace.find_map(ModelRun.create(SPEC, Settings.make(quick=True)))
    assert one_pass["newton_cg_products"] == 0
    np.testing.assert_allclose(one_pass["z"].numpy(), found["z"].numpy(), rtol=0,
                               atol=np.sqrt(2 * floor / smallest))


def test_the_memory_budget_is_part_of_a_fits_cache_key():
    # It decides how many products share a pass, and with that the Hessian's last bits on
    # most models (a network's, a logistic regression's): a fit computed under another
    # budget is not the one this command computes.
    fingerprint = {"model": "m"}
    assert fit_key(fingerprint, "laplace_full", Settings.make(memory_budget=10**8)) != \
        fit_key(fingerprint, "laplace_full", Settings.make())
    assert fit_key(fingerprint, "laplace_full", Settings.make(seed=1)) != \
        fit_key(fingerprint, "laplace_full", Settings.make())


@pytest.mark.parametrize("value", ["lots", "0", "-1G", "10K", "nanG"])
def test_a_bad_memory_budget_is_one_line_and_exit_2(value, tmp_path, capsys):
    assert main(["--models", "seed_linear", "--memory-budget", value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "memory-budget" in err[0]
    assert not (tmp_path / "out").exists()
