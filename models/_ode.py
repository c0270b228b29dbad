"""A fixed-grid fourth-order Runge-Kutta integrator that broadcasts over batch dimensions.

Pyro's vectorised particles give every parameter leading batch dimensions; the solver
only does elementwise arithmetic, so the states broadcast with them, and autodiff goes
through every step (exact gradients and Hessians of the discretised solution). Its error
against a tight-tolerance reference solver is measured in the tests, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def output_grid(t0: float, times: Sequence[float], steps: int, first_steps: int, first_step: float) -> tuple[list[float], list[int]]:
    """Integration grid through every output time, refined geometrically after ``t0``.

    The first interval ``[t0, times[0]]`` is split into ``first_steps`` steps growing
    geometrically from ``first_step`` (a solution that changes fast right after ``t0``
    needs the small steps there); every later interval into ``steps`` equal steps.

    Returns
    -------
    grid : list of float
        ``t0`` then the grid points, increasing.
    output_index : list of int
        ``grid[output_index[i]] == times[i]``.
    """
    times = [float(t) for t in times]
    if not times or any(b <= a for a, b in zip([float(t0)] + times[:-1], times)):
        raise ValueError("output times must be increasing and later than t0")
    if steps < 1 or first_steps < 2 or not 0 < first_step < times[0] - t0:
        raise ValueError("need steps >= 1, first_steps >= 2 and 0 < first_step < times[0] - t0")
    first = t0 + np.geomspace(first_step, times[0] - t0, first_steps)
    grid = [float(t0)] + [float(t) for t in first[:-1]] + [times[0]]
    output_index = [len(grid) - 1]
    for a, b in zip(times[:-1], times[1:]):
        grid += [a + (b - a) * k / steps for k in range(1, steps)] + [b]
        output_index.append(len(grid) - 1)
    return grid, output_index


def _midpoints(grid: Sequence[float]) -> list[float]:
    return [t + (t_next - t) / 2 for t, t_next in zip(grid[:-1], grid[1:])]


def stage_times(grid: Sequence[float]) -> list[float]:
    """Every time at which :func:`rk4` on ``grid`` evaluates ``f``, as the same floats.

    A right-hand side with a time-only term (a forcing) can evaluate it at all of them in
    one vectorised call and look it up by ``t``: far fewer operations for autodiff to record.
    """
    return sorted(set(grid) | set(_midpoints(grid)))


def rk4(f: Callable[[float, torch.Tensor], torch.Tensor], y0: torch.Tensor, grid: Sequence[float]) -> list[torch.Tensor]:
    """Classical RK4 on the given grid (Hairer, Norsett & Wanner, *Solving ODEs I*, II.1).

    Parameters
    ----------
    f : callable
        ``f(t, y) -> dy/dt``, elementwise in ``y`` and broadcasting over batch dimensions.
    y0 : torch.Tensor
        State at ``grid[0]``, any shape.
    grid : sequence of float
        Increasing times.

    Returns
    -------
    list of torch.Tensor
        The state at every grid point, ``grid[0]`` included.
    """
    states = [y0]
    y = y0
    for t, t_half, t_next in zip(grid[:-1], _midpoints(grid), grid[1:]):
        h = t_next - t
        # Fused adds (add with alpha): fewer operations for autodiff to record, same numbers.
        k1 = f(t, y)
        k2 = f(t_half, torch.add(y, k1, alpha=h / 2))
        k3 = f(t_half, torch.add(y, k2, alpha=h / 2))
        k4 = f(t_next, torch.add(y, k3, alpha=h))
        y = torch.add(y, torch.add(torch.add(k1, k2 + k3, alpha=2.0), k4), alpha=h / 6)
        states.append(y)
    return states
