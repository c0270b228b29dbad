"""``study.core.jit``: which traces run without TorchScript's optimisation passes."""

import math

import pytest
import torch

from study.core.jit import LARGE_GRAPH, checked_trace


def _chain(n_ops):
    def fn(x):
        for _ in range(n_ops):
            x = x * 1.0001
        return x.sum()
    return fn


def test_a_small_trace_is_optimised_and_a_large_one_is_not():
    x = torch.ones(3)
    assert checked_trace(_chain(10), [x])[2]
    assert not checked_trace(_chain(LARGE_GRAPH + 10), [x])[2]


def test_an_untraceable_function_is_left_to_the_caller():
    def fn(x):
        raise RuntimeError("cannot trace")
    assert checked_trace(fn, [torch.ones(3)])[2]


def test_the_lotka_volterra_elbo_runs_unoptimised_and_matches_the_plain_elbo(monkeypatch):
    # Its ELBO trace has about 9,400 nodes; like every ELBO trace it runs without the
    # optimisation passes from its first call (whose compile took minutes), and its loss still
    # equals Trace_ELBO's.
    import contextlib

    import pyro
    from pyro.infer.autoguide import AutoNormal

    from conftest import make_run
    from study.methods.svi import CheckedJitELBO

    run = make_run("hudson_lynx_hare-lotka_volterra", quick=True)
    pyro.clear_param_store()
    guide = AutoNormal(run.spec.model, init_loc_fn=run.init_loc_fn, init_scale=0.1)
    guide(**run.data)
    elbo = CheckedJitELBO(4, run.joint.max_plate_nesting)
    flags = []
    optimized_execution = torch.jit.optimized_execution

    @contextlib.contextmanager
    def recording(flag):
        flags.append(bool(flag))
        with optimized_execution(flag):
            yield

    monkeypatch.setattr(torch.jit, "optimized_execution", recording)
    for _ in range(2):
        loss = elbo.loss_and_grads(run.spec.model, guide, **run.data)
    assert elbo.graph_nodes() > LARGE_GRAPH
    assert flags == [False, False]
    assert elbo.use_jit and torch.isfinite(torch.tensor(loss))


def test_checked_trace_returns_a_trace_that_equals_the_function():
    def fn(x):
        return (torch.sin(x) * x).sum() + 0.5 * (x**2).sum()

    points = [torch.zeros(4, dtype=torch.float64), torch.linspace(-1, 2, 4, dtype=torch.float64)]
    compiled, traced, optimise = checked_trace(fn, points)
    assert traced and optimise and compiled is not fn
    z = torch.tensor([0.3, -0.7, 1.1, 2.0], dtype=torch.float64, requires_grad=True)
    (g_traced,) = torch.autograd.grad(compiled(z), z)
    (g_eager,) = torch.autograd.grad(fn(z), z)
    torch.testing.assert_close(g_traced, g_eager, rtol=1e-12, atol=1e-12)


def test_checked_trace_falls_back_on_value_dependent_control_flow_and_untraceable_code():
    def branching(x):  # the trace keeps the branch taken at the first point
        return (x**2).sum() if float(x.sum()) > 0 else x.sum()

    points = [torch.ones(3, dtype=torch.float64), -torch.ones(3, dtype=torch.float64)]
    compiled, traced, _ = checked_trace(branching, points)
    assert compiled is branching and not traced

    def untraceable(x):
        raise RuntimeError("cannot trace")

    compiled, traced, optimise = checked_trace(untraceable, points)
    assert compiled is untraceable and not traced and optimise


def test_exact_trace_reproduces_a_model_log_joint_bit_for_bit():
    # Without the optimisation passes the trace runs the eager operations in the eager order:
    # value and gradient equal to the last bit, at points it was not checked at too.
    from conftest import make_run
    from study.core.jit import exact_trace

    joint = make_run("kidiq-kidscore_momiq", quick=True).joint

    def potential(z):
        return -joint.log_joint(z)

    generator = torch.Generator().manual_seed(1)
    points = [joint.init_z + torch.randn(joint.dim, generator=generator, dtype=joint.dtype) for _ in range(4)]
    compiled, traced = exact_trace(potential, points[:2])
    assert traced and compiled is not potential
    for z in points[2:]:
        z_eager = z.clone().requires_grad_(True)
        z_traced = z.clone().requires_grad_(True)
        eager, traced_value = potential(z_eager), compiled(z_traced)
        eager.backward()
        traced_value.backward()
        assert torch.equal(eager.detach(), traced_value.detach())
        assert torch.equal(z_eager.grad, z_traced.grad)


def test_exact_trace_keeps_the_function_where_the_trace_differs_or_fails():
    from study.core.jit import exact_trace

    def branching(x):  # the trace keeps the branch taken at the first point
        return (x**2).sum() if float(x.sum()) > 0 else x.sum()

    points = [torch.ones(3, dtype=torch.float64), -torch.ones(3, dtype=torch.float64)]
    assert exact_trace(branching, points) == (branching, False)

    def untraceable(x):
        raise RuntimeError("cannot trace")

    assert exact_trace(untraceable, points) == (untraceable, False)


def test_a_non_finite_trace_value_is_computed_again_by_the_function():
    # The trace has no Python checks; where its value is not finite, the function's own
    # (here, a check that raises) decide, as they would without the trace.
    from study.core.jit import exact_trace

    def checked_log(x):
        if not bool((x > 0).all()):
            raise ValueError("x must be positive")
        return torch.log(x).sum()

    compiled, traced = exact_trace(checked_log, [torch.ones(3, dtype=torch.float64)])
    assert traced
    assert float(compiled(torch.full((3,), 2.0, dtype=torch.float64))) == 3 * math.log(2.0)
    with pytest.raises(ValueError, match="positive"):
        compiled(torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64))
