"""TorchScript traces that are too large for the graph executor's optimisation passes.

The study traces its loss (``JitTrace_ELBO``) and NUTS's potential (``jit_compile``).
On a traced graph of many thousands of nodes (an ODE solved by a few hundred Runge-Kutta
steps) TorchScript's graph-executor optimisation passes took minutes before the first
optimised call: the Lotka-Volterra model's 14,500-node ELBO had not finished one after
10 minutes. Without those passes the trace still runs faster than eager code (68 ms
against 78 ms per step there), so above ``LARGE_GRAPH`` nodes the study runs traces with
``torch.jit.optimized_execution(False)``. Smaller graphs gain little from the passes either:
the one-compartment ODE's 2,988-node ELBO took 18-20 ms per step optimised against 12-14 ms
without, and on seven models of 585-1,933 nodes (regressions, a GP, an HMM, the small
network) the two were within the machine's noise (about 15%); hence 2,000.
"""

from __future__ import annotations

from typing import Callable

import torch

LARGE_GRAPH = 2000


def graph_nodes(traced) -> int:
    """Number of nodes of a traced function's graph."""
    return len(list(traced.graph.nodes()))


def optimise_trace(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> bool:
    """Whether ``fn``'s trace at ``example`` is small enough for the optimisation passes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(fn, (example,), check_trace=False)
        except Exception:  # not traceable: the caller's own fallback decides
            return True
    return graph_nodes(traced) <= LARGE_GRAPH
