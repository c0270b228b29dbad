"""Laplace approximations from the exact autodiff Hessian at the MAP.

``H`` is the Hessian of ``U(z) = -log p(z, y)`` in the unconstrained
coordinates of ``study.core.joint`` (log-Jacobian included: the target of Pyro's
``AutoLaplaceApproximation``), at the mode ``z*``:

* ``laplace_full``: ``N(z*, H^-1)``; marginal sd ``sqrt((H^-1)_ii)``.
* ``laplace_diag``: ``N(z*, diag(1/H_ii))``; sd ``1/sqrt(H_ii)``, the conditional
  sd of ``z_i`` given all others, and laplace-torch's ``DiagLaplace`` for a GLM.

For a Gaussian posterior the mean-field optimum is exactly ``laplace_diag``
(``sigma_i^-2 = H_ii``), and ``1/sqrt(H_ii) <= sqrt((H^-1)_ii)`` with equality
only when ``z_i`` is uncorrelated with the rest (Bishop, PRML section 10.1.2).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from study.core.context import ModelRun
from study.core.draws import diagonal_gaussian_draws, gaussian_draws
from study.core.jit import exact_trace, same_value_and_grad
from study.core.results import Fit
from study.methods.size_guard import dense_hessian_allowed


class NotPositiveDefinite(ArithmeticError):
    """The Hessian at the MAP is not positive definite: no Laplace approximation."""

    def __init__(self, min_eigenvalue: float):
        super().__init__(
            f"Hessian at the MAP is not positive definite (smallest eigenvalue {min_eigenvalue:.3g})"
        )
        self.min_eigenvalue = min_eigenvalue


class MapNotFound(ArithmeticError):
    """The MAP search ended at a non-finite point or with a large gradient."""


# What a method that starts from the shared MAP (``map_and_hessian``) catches to start elsewhere:
# no MAP was found, or the search or its Hessian failed numerically.
NO_MAP = (MapNotFound, torch.linalg.LinAlgError, ValueError, RuntimeError)


# L-BFGS iterations of one MAP search.
LBFGS_MAX_ITER = 5000
# Above the size guard the search stops once a block of LARGE_MAP_BLOCK iterations lowers
# -log p by less than LARGE_MAP_DECREASE nats (``_lbfgs``).
LARGE_MAP_BLOCK = 100
LARGE_MAP_DECREASE = 1.0


def _lbfgs(joint, start: torch.Tensor, early_stop: bool = False, potential=None) -> torch.Tensor:
    """L-BFGS (strong Wolfe line search) on ``-log p`` from ``start``; the end point, ``(d,)``.

    ``potential``: ``z -> -log p(z, y)``, by default ``-joint.log_joint(z)`` (``find_map``
    passes its bit-for-bit trace, ``study.core.jit.exact_trace``).

    Up to ``LBFGS_MAX_ITER`` iterations. With ``early_stop`` (above the size guard) the
    iterations run in blocks of ``LARGE_MAP_BLOCK`` (one L-BFGS run: its history carries
    over) and stop once a block lowers ``-log p`` by less than ``LARGE_MAP_DECREASE``
    nat. There no exact Laplace approximation is built on the MAP: the mean-field and IVON
    fits start from it (their own convergence checks decide), and laplace-torch's
    ``laplace_torch_diag``, and the GGN methods when no mean-field fit ran, are taken
    there. On the 96,001-weight diabetes network the 5,000 iterations took 411 s; the
    blocks lowered ``-log p`` (about 88,540) by 4.8, 2.0, 1.3, 0.59 and 0.33 nat from
    iteration 500 to 1,000, with the gradient norm falling from 14 to 1.9 (0.31 at 2,000).
    """
    if potential is None:
        def potential(z):
            return -joint.log_joint(z)
    z = start.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [z], lr=1.0, max_iter=LARGE_MAP_BLOCK if early_stop else LBFGS_MAX_ITER, tolerance_grad=1e-12,
        tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe",
    )

    def closure():
        optimiser.zero_grad()
        value = potential(z)
        value.backward()
        return value

    if not early_stop:
        optimiser.step(closure)
        return z.detach()
    with torch.no_grad():
        before = float(potential(z))
    for _ in range(LBFGS_MAX_ITER // LARGE_MAP_BLOCK):
        optimiser.step(closure)
        with torch.no_grad():
            after = float(potential(z))
        if not before - after >= LARGE_MAP_DECREASE:  # also stops on a non-finite value
            break
        before = after
    return z.detach()


# Relative residual at which a Newton step's conjugate-gradient solve stops.
CG_RTOL = 1e-10


def conjugate_gradient(hvp, b: torch.Tensor, max_iter: int, rtol: float = CG_RTOL):
    """``H^-1 b`` by conjugate gradients, with ``H`` only through ``hvp(v) = H v``.

    Returns ``(x, products)``: ``x`` is ``None`` where a search direction meets curvature
    that is not positive (``H`` is not positive definite there). Stops at a residual of
    ``rtol |b|`` or after ``max_iter`` products; an unfinished ``x`` is still a descent
    direction for a positive definite ``H`` (every iterate from ``x = 0`` is).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    stop = (rtol * b.norm()) ** 2
    products = 0
    while products < max_iter and rr > stop:
        hp = hvp(p)
        products += 1
        curvature = p @ hp
        if not curvature > 0:
            return None, products
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * hp
        rr_next = r @ r
        p = r + (rr_next / rr) * p
        rr = rr_next
    return x, products


def find_map(run: ModelRun, max_newton_steps: int = 50) -> dict:
    """Mode of ``log p(z, y)``: L-BFGS, then Newton steps, then the exact Hessian at the mode.

    Where the whole Hessian is one batched pass of Hessian-vector products within the run's
    memory budget (``study.core.joint.FlatJoint.hessian_chunk``), each Newton step solves
    with it: it costs about one product, and the last step's Hessian is the one at the mode.
    Where it takes several passes (a model whose products hold data-sized temporaries),
    each step solves ``H step = grad`` by conjugate gradients on single products
    (``conjugate_gradient``), and the dense Hessian is built once, at the mode: on a
    2,000-weight regression written with ``(X * w).sum(-1)`` a dense Hessian is 2,000
    products of 48 MB temporaries, a conjugate-gradient step about 20.

    Above the size guard (``study.methods.size_guard.DENSE_HESSIAN_LIMIT``) the
    search is L-BFGS alone, stopped when it no longer lowers ``-log p`` by a nat per
    100 iterations (``_lbfgs``), and no Hessian is built: memory stays O(d).

    Returns
    -------
    dict
        ``z`` ``(d,)``, ``hessian`` ``(d, d)`` (``None`` above the size guard),
        ``potential``, ``grad_norm``, ``newton_steps``, ``wall_seconds``,
        ``start_potentials`` (``-log p`` where each L-BFGS start ended). The search
        starts at the model's init point (``ModelSpec.init_loc_fn``) and, for a model
        with ``map_starts = K > 1``, also from ``K - 1`` seeded points ``init + N(0, I)``;
        Newton steps refine the best end point. A start whose path leaves the support
        is dropped.
    """
    joint = run.joint
    start_time = time.perf_counter()
    starts = [joint.init_z]
    if run.spec.map_starts > 1:
        generator = torch.Generator().manual_seed(run.seed("map/starts"))
        starts += [
            joint.init_z + torch.randn(joint.dim, generator=generator, dtype=joint.init_z.dtype)
            for _ in range(run.spec.map_starts - 1)
        ]
    # The L-BFGS paths on a trace of -log p that reproduces the eager one bit for bit at every
    # start (study.core.jit.exact_trace): the same end points, sooner where Python's and Pyro's
    # per-call work dominates (the 49 default models' searches 38.6 s -> 30.6 s).
    def eager_potential(z):
        return -joint.log_joint(z)

    traced_potential, traced = exact_trace(eager_potential, starts)
    early_stop = not dense_hessian_allowed(joint.dim)
    found = []
    for start in starts:
        try:
            end = _lbfgs(joint, start, early_stop=early_stop, potential=traced_potential)
            if traced and not same_value_and_grad(eager_potential, traced_potential, end):
                # The path left what the trace reproduces (a branch of the model taken at no
                # start): the eager search instead.
                end = _lbfgs(joint, start, early_stop=early_stop)
        except (ValueError, RuntimeError):  # a start whose trajectory leaves the support
            if len(starts) == 1:
                raise
            continue
        potential = float(-joint.log_joint(end))
        if math.isfinite(potential):
            found.append((potential, end))
    if not found:
        raise MapNotFound(f"every one of {len(starts)} MAP searches reached a non-finite log density")
    start_potentials = [p for p, _ in found]
    z = min(found, key=lambda pair: pair[0])[1]
    newton_steps = cg_products = 0
    hessian, hessian_at = None, None
    if not dense_hessian_allowed(joint.dim):
        max_newton_steps = 0
    for newton_steps in range(1, max_newton_steps + 1):
        potential, grad, hvp = joint.hvp_at(z)
        if not torch.isfinite(potential):
            raise MapNotFound(f"MAP search reached a non-finite log density ({potential.item()})")
        if joint.hvp_bytes is None:
            hvp(torch.zeros_like(grad))  # counts the bytes of one product
        if joint.hessian_chunk() >= joint.dim:
            # The whole Hessian is one batched pass within the memory budget: it costs about
            # one product, and the step solves with it exactly.
            hessian, hessian_at = joint.hessian(z, hvp), z
            chol, info = torch.linalg.cholesky_ex(hessian)
            if info != 0:
                break  # not locally convex: leave it to the positive-definiteness check
            step = torch.cholesky_solve(grad[:, None], chol)[:, 0]
        else:
            step, products = conjugate_gradient(hvp, grad, max_iter=2 * joint.dim + 10)
            cg_products += products
            if step is None:
                break  # not locally convex: leave it to the positive-definiteness check
        decrement = float(grad @ step)  # Newton decrement squared: 2 x predicted decrease
        # Below ~1e-13 |U| the decrease is lost in float64 round-off of U itself.
        if decrement < 1e-13 * max(1.0, abs(float(potential))):
            break
        t = 1.0
        while t > 1e-10:
            candidate = z - t * step
            new_potential = -joint.log_joint(candidate).detach()
            if torch.isfinite(new_potential) and new_potential <= potential - 1e-4 * t * decrement:
                break
            t *= 0.5
        else:
            break
        if torch.equal(candidate, z):
            # The step is below z's resolution: where round-off leaves a gradient the decrement
            # test cannot see past (float32), the line search would accept it again and again.
            break
        z = candidate
    potential, grad = joint.potential_and_grad(z)
    if not torch.isfinite(potential):
        raise MapNotFound(f"MAP search reached a non-finite log density ({potential.item()})")
    if dense_hessian_allowed(joint.dim):
        # The last Newton step's Hessian when the search stopped where it was taken (the usual
        # case); else the search's one dense Hessian, in passes within the memory budget.
        if hessian_at is None or not torch.equal(hessian_at, z):
            hessian = joint.hessian(z)
        if not torch.isfinite(hessian).all():
            raise MapNotFound("Hessian at the MAP has non-finite entries")
    else:
        hessian = None
    return {
        "z": z,
        "hessian": hessian,
        "potential": float(potential),
        "grad_norm": float(grad.norm()),
        "newton_steps": newton_steps,
        "newton_cg_products": cg_products,
        "wall_seconds": time.perf_counter() - start_time,
        "start_potentials": start_potentials,
    }


def map_and_hessian(run: ModelRun) -> dict:
    """``find_map`` once per model run; the Laplace methods share it."""
    if "map" not in run.cache:
        run.cache["map"] = find_map(run)
    return run.cache["map"]


def _curvature_info(found: dict) -> dict:
    if found["hessian"] is None:
        raise ValueError("no exact Hessian above the size guard (study.methods.size_guard)")
    eigenvalues = torch.linalg.eigvalsh(found["hessian"])
    smallest, largest = float(eigenvalues[0]), float(eigenvalues[-1])
    info = {
        "wall_seconds": found["wall_seconds"],
        "map_grad_norm": found["grad_norm"],
        "map_log_joint": -found["potential"],
        "newton_steps": found["newton_steps"],
        "newton_cg_products": found.get("newton_cg_products"),
        "map_start_potentials": found.get("start_potentials"),
        "hessian_min_eigenvalue": smallest,
        "hessian_max_eigenvalue": largest,
        "hessian_condition_number": largest / smallest if smallest > 0 else float("inf"),
    }
    if smallest <= 0:
        raise NotPositiveDefinite(smallest)
    return info


def laplace_covariance(run: ModelRun) -> tuple[dict, torch.Tensor]:
    """MAP facts and ``H^-1`` (the full Laplace covariance), shape ``(d, d)``."""
    found = map_and_hessian(run)
    info = _curvature_info(found)
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(found["hessian"]))
    return info, 0.5 * (covariance + covariance.T)


def fit_laplace_full(run: ModelRun) -> Fit:
    """``N(z*, H^-1)`` with the exact Hessian."""
    info, covariance = laplace_covariance(run)
    z_map = map_and_hessian(run)["z"]
    mean = z_map.numpy().copy()
    draws = gaussian_draws(mean, covariance.numpy(), run.settings.draws, run.seed("laplace_full/draws"))
    return run.new_fit(
        "laplace_full", mean=mean, sd=np.sqrt(np.diag(covariance.numpy())), draws=draws, info=info
    )


def fit_laplace_diag(run: ModelRun) -> Fit:
    """``N(z*, diag(1/H_ii))`` with the exact Hessian."""
    found = map_and_hessian(run)
    info = _curvature_info(found)
    z_map = found["z"].numpy().copy()
    sd = 1.0 / np.sqrt(np.diag(found["hessian"].numpy()))
    draws = diagonal_gaussian_draws(z_map, sd, run.settings.draws, run.seed("laplace_diag/draws"))
    return run.new_fit("laplace_diag", mean=z_map, sd=sd, draws=draws, info=info)
