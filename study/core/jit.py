"""TorchScript traces that are too large for the graph executor's optimisation passes.

The study traces its loss (``JitTrace_ELBO``) and NUTS's potential (``checked_trace``:
Pyro's ``NUTS(jit_compile=True)`` traces only a ``model``, never a ``potential_fn``). On
a traced graph of many thousands of nodes (an ODE solved by a few hundred Runge-Kutta
steps) TorchScript's graph-executor optimisation passes took minutes before the first
optimised call: the Lotka-Volterra model's 14,500-node ELBO had not finished one after
10 minutes. Without those passes the trace still runs faster than eager code (68 ms
against 78 ms per step there). Smaller graphs gain nothing from the passes either: the
one-compartment ODE's 2,988-node ELBO took 18-20 ms per step optimised against 12-14 ms
without, and the passes cost each SVI fit its first calls. So the SVI loss
(``study.methods.svi.CheckedJitELBO``) always runs its trace with
``torch.jit.optimized_execution(False)``, and ``checked_trace`` (NUTS's potential) does so
above ``LARGE_GRAPH`` nodes.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch

LARGE_GRAPH = 2000


def graph_nodes(traced) -> int:
    """Number of nodes of a traced function's graph."""
    return len(list(traced.graph.nodes()))


def _value_and_grad(fn, z: torch.Tensor) -> tuple[float, torch.Tensor]:
    z = z.detach().clone().requires_grad_(True)
    value = fn(z)
    (grad,) = torch.autograd.grad(value, z)
    return float(value.detach()), grad


def checked_trace(fn: Callable[[torch.Tensor], torch.Tensor], points: Sequence[torch.Tensor],
                  rel_tol: float = 1e-9) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool, bool]:
    """``fn`` (a scalar function of one vector) traced at ``points[0]``, where the trace proves itself.

    Returns ``(function, traced, optimise)``: the trace when tracing succeeds and its value
    and gradient equal ``fn``'s at every point to ``rel_tol`` (value-dependent Python
    control flow in ``fn`` shows up as a mismatch at some point, or as a failure to trace),
    else ``fn`` itself; ``optimise`` says whether the trace is small enough for the graph
    executor's optimisation passes (run it under ``torch.jit.optimized_execution(optimise)``).
    A trace runs the same operations as ``fn``: on the study's models its gradient equals the
    eager one to 1e-13 or better, at about a third of the cost (0.6 ms against 1.6 ms eager
    per gradient of the 31-weight logistic regression's log joint).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(fn, (points[0].detach(),), check_trace=False)
        except Exception:  # value-dependent control flow, an untraceable operation: stay eager
            return fn, False, True
    optimise = graph_nodes(traced) <= LARGE_GRAPH
    try:
        with torch.jit.optimized_execution(optimise):
            for z in points:
                value, grad = _value_and_grad(fn, z)
                traced_value, traced_grad = _value_and_grad(traced, z)
                scale = max(1.0, float(grad.abs().max()))
                if not (math.isclose(value, traced_value, rel_tol=rel_tol, abs_tol=rel_tol)
                        and float((grad - traced_grad).abs().max()) <= rel_tol * scale):
                    return fn, False, True
    except Exception:
        return fn, False, True
    return traced, True, optimise


def exact_trace(fn: Callable[[torch.Tensor], torch.Tensor],
                points: Sequence[torch.Tensor]) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
    """``fn`` traced at ``points[0]`` and run without the graph executor's optimisation passes,
    where that reproduces ``fn`` bit for bit; else ``fn`` itself. Returns ``(function, traced)``.

    Without the passes a trace runs the operations ``fn`` runs, in the same order, so its
    value and gradient are the eager ones to the last bit (checked at every point: a
    difference, value-dependent Python control flow among them, keeps ``fn``), and a
    computation built on it (the MAP search's L-BFGS path) ends where the eager one ends.
    Where the trace's value is not finite, ``fn`` is called instead, so that the model's own
    checks raise as they would eagerly. A branch taken at none of the points is fixed in the
    trace as it was taken at ``points[0]``: a caller checks the points it ends at
    (``same_value_and_grad``).

    It still skips Python and Pyro's per-call work: per gradient of ``-log p``, 0.33 ms
    against 0.84 ms eager on a kidiq regression, 0.54 against 1.38 on the 31-weight network,
    0.91 against 2.08 on the 961-weight one, 21 against 29 on the Lotka-Volterra ODE.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.jit.optimized_execution(False):
                traced = torch.jit.trace(fn, (points[0].detach(),), check_trace=False)
                if not all(same_value_and_grad(fn, traced, z) for z in points):
                    return fn, False
        except Exception:  # value-dependent control flow, an untraceable operation: stay eager
            return fn, False

    def unoptimised(z: torch.Tensor) -> torch.Tensor:
        with torch.jit.optimized_execution(False):
            value = traced(z)
        # The trace has no Python checks (a distribution's argument validation, which raises
        # where a parameter left its support): a non-finite value is computed again by ``fn``,
        # which raises or returns what it returns there.
        return value if torch.isfinite(value).all() else fn(z)

    return unoptimised, True


def same_value_and_grad(fn: Callable[[torch.Tensor], torch.Tensor], other: Callable[[torch.Tensor], torch.Tensor],
                        z: torch.Tensor) -> bool:
    """Whether ``fn`` and ``other`` give the same value and gradient at ``z``, bit for bit."""
    value, grad = _value_and_grad(fn, z)
    other_value, other_grad = _value_and_grad(other, z)
    return value == other_value and torch.equal(grad, other_grad)
