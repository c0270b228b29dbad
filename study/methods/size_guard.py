"""The size guard: methods whose memory grows as d^2 or whose time grows as d^3 stop at a stated size.

Above its limit a method is skipped, and its one-line reason reaches the report
(the ``applies`` hook of the ``METHODS`` table). The limits count the latent
coordinates ``d`` of the flat unconstrained vector (``study.core.joint``):

================================  ======  ====================================================
method                            limit   why
================================  ======  ====================================================
``laplace_full``, ``laplace_diag``  5,000   exact d x d Hessian: d Hessian-vector products, d^2
``data_sweep``                              memory (200 MB at 5,000), a d^3 Cholesky
``laplace_torch_full``             5,000   laplace-torch's dense d x d GGN and its inverse
``svi_fullrank``, ``svi_lowrank``    500   a d x d covariance averaged at every step (and the
                                           full-rank guide's d^2 Cholesky factor and Adam state);
                                           measured on the 10^3-weight networks (d = 961,
                                           1,210): no fit converged in the 3,000-step cap (sigma
                                           still moving 6-9%, or the full-rank Cholesky failed)
                                           and each cost 220-800 s, a third of the whole study
``svi_meanfield_lr``                 256   the 2d x 2d ELBO Hessian at every curvature draw
``reference`` (NUTS only)            500   a dense Laplace preconditioner and d-dimensional
                                           trajectories that cannot mix in a network
================================  ======  ====================================================

Analytic references and posteriordb's gold draws have no limit. Below its limit
the exact Hessian is built row by row (``FlatJoint.hessian``): O(d^2) memory.
The mean-field fixed-point check (``study.checks.fixed_point``) needs no guard:
above ``FIXED_POINT_ALL_COORDINATES`` it measures a random subset of coordinates.
"""

from __future__ import annotations

from typing import Callable

from study.checks.fixed_point import FIXED_POINT_ALL_COORDINATES
from study.core.context import ModelRun

# The exact d x d Hessian of -log p (the MAP search's Newton steps, laplace_full/diag, the
# data sweep, NUTS's preconditioner and the dense guides' start all use it).
DENSE_HESSIAN_LIMIT = 5_000
DENSE_GUIDE_LIMIT = 500
# Linear response needs every coordinate's Hessian column at every draw of the fixed-point check.
LINEAR_RESPONSE_LIMIT = FIXED_POINT_ALL_COORDINATES
NUTS_LIMIT = 500

LIMITS: dict[str, tuple[int, str]] = {
    "laplace_full": (DENSE_HESSIAN_LIMIT, "the exact d x d Hessian (d Hessian-vector products, d^2 memory, a d^3 Cholesky)"),
    "laplace_diag": (DENSE_HESSIAN_LIMIT, "its diagonal comes from the exact d x d Hessian (use hessian_diag)"),
    "data_sweep": (DENSE_HESSIAN_LIMIT, "it refits laplace_full on every subset (an exact d x d Hessian each)"),
    "laplace_torch_full": (DENSE_HESSIAN_LIMIT, "laplace-torch's dense d x d GGN and its inverse"),
    "svi_fullrank": (DENSE_GUIDE_LIMIT, "a dense d x d Cholesky factor and covariance; at d ~ 10^3 it did not converge in the step cap"),
    "svi_lowrank": (DENSE_GUIDE_LIMIT, "a d x d covariance averaged every step; at d ~ 10^3 it did not converge in the step cap"),
    "svi_meanfield_lr": (LINEAR_RESPONSE_LIMIT, "the 2d x 2d Hessian of the ELBO at every curvature draw"),
    "reference": (NUTS_LIMIT, "NUTS with a dense Laplace preconditioner, which cannot mix at this size"),
}


def too_large(run: ModelRun, method: str) -> str | None:
    """The one-line reason ``method`` is skipped for this model, or ``None`` when it fits the guard."""
    if method not in LIMITS:
        return None
    limit, why = LIMITS[method]
    if method == "reference" and (run.spec.exact_posterior is not None or run.spec.reference_draws is not None):
        return None  # analytic posterior or stored draws: no dense work
    d = run.joint.dim
    if d <= limit:
        return None
    return f"skipped above {limit:,} latent coordinates (this model has {d:,}): {why}"


def guarded(method: str, applies: Callable[[ModelRun], str | None] | None = None) -> Callable[[ModelRun], str | None]:
    """``applies(run)`` for the ``METHODS`` table: the size guard first, then the method's own test."""

    def check(run: ModelRun) -> str | None:
        return too_large(run, method) or (applies(run) if applies is not None else None)

    check.__name__ = f"applies_{method}"
    return check


def dense_hessian_allowed(dim: int) -> bool:
    """Whether a model of ``dim`` coordinates may build its exact d x d Hessian."""
    return dim <= DENSE_HESSIAN_LIMIT
