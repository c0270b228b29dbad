"""Linear-response covariance of the mean-field fit (method ``svi_meanfield_lr``).

Giordano, Broderick & Jordan, "Covariances, Robustness, and Variational
Bayes", JMLR 2018: perturb the log joint by ``t^T z``; the mean-field optimum's
mean moves by ``d mu* / dt^T``, which is the posterior covariance for a
Gaussian target and a far better estimate than ``diag(sigma^2)`` elsewhere. With
``eta = (mu, log sigma)`` the mean-field parameters and ``ELBO(eta)`` the
objective,

    Sigma_LR = [(-grad^2_eta ELBO)^-1]_{mu mu}    at the optimum.

The ELBO's Hessian is taken with fixed draws (common random numbers) from the
converged ``q``: the draws of the fixed-point check (``study.checks.fixed_point``),
which are antithetic (``eps`` and ``-eps``). For a Gaussian target ``H`` is
constant, so the ``mu``-``log sigma`` block ``E[H diag(sigma eps)]`` is
``H diag(sigma mean(eps)) = 0`` exactly and ``Sigma_LR = H^-1``, the exact
covariance, whatever ``mu`` and ``sigma`` are.
"""

from __future__ import annotations

import time

import numpy as np

from study.core.context import ModelRun
from study.core.draws import gaussian_draws
from study.checks.fixed_point import Curvature, expected_curvature
from study.core.results import SKIPPED, Fit


class NotPositiveDefinite(ArithmeticError):
    """``-grad^2 ELBO`` is not positive definite at the mean-field fit: no linear response."""


def linear_response(blocks: np.ndarray, d: int) -> tuple[np.ndarray, float]:
    """``[(B)^-1]_{mu mu}`` of an averaged ``-ELBO`` Hessian ``B``, shape ``(2d, 2d)``.

    Returns
    -------
    covariance : np.ndarray
        Shape ``(d, d)``.
    min_eigenvalue : float
        Smallest eigenvalue of ``B`` (must be positive).
    """
    eigenvalues = np.linalg.eigvalsh(blocks)
    if not eigenvalues[0] > 0:
        raise NotPositiveDefinite(
            "the ELBO's Hessian in (mu, log sigma) is not negative definite at the mean-field fit "
            f"(smallest eigenvalue of its negative: {eigenvalues[0]:.3g})"
        )
    covariance = np.linalg.inv(blocks)[:d, :d]
    return 0.5 * (covariance + covariance.T), float(eigenvalues[0])


def linear_response_from_curvature(curvature: Curvature) -> dict:
    """Sigma_LR from all draws, and the delete-a-group jackknife SE of its marginal sds.

    Returns
    -------
    dict
        ``covariance`` ``(d, d)``, ``sd`` ``(d,)``, ``sd_se`` ``(d,)`` (Monte Carlo error of
        the Hessian draws), ``min_eigenvalue``, ``cross_block`` (largest
        ``|mu-log sigma|`` entry relative to the largest ``|mu-mu|`` entry: 0 for a Gaussian
        target with antithetic draws).
    """
    d = curvature.mean.shape[0]
    total = curvature.blocks.sum(0)
    n = curvature.counts.sum()
    B = total / n
    covariance, smallest = linear_response(B, d)
    sd = np.sqrt(np.diag(covariance))
    groups = curvature.blocks.shape[0]
    leave_out = []
    for g in range(groups):
        partial = (total - curvature.blocks[g]) / (n - curvature.counts[g])
        leave_out.append(np.sqrt(np.diag(linear_response(partial, d)[0])))
    leave_out = np.stack(leave_out)
    sd_se = np.sqrt((groups - 1) / groups * ((leave_out - leave_out.mean(0)) ** 2).sum(0))
    cross = float(np.max(np.abs(B[:d, d:])) / np.max(np.abs(B[:d, :d])))
    return {"covariance": covariance, "sd": sd, "sd_se": sd_se, "min_eigenvalue": smallest, "cross_block": cross}


def applicability(run: ModelRun) -> str | None:
    """None, or why there is no linear-response covariance at this model's mean-field fit.

    The formula needs a strict local maximum of the ELBO: ``-grad^2 ELBO`` positive
    definite. Where the mean-field fit has already run (it runs first), that is checked
    on its curvature draws; a network's flat or saddle directions (unit symmetries) can
    make it indefinite.
    """
    fit = run.fits.get("svi_meanfield")
    curvature = run.cache.get("meanfield_curvature")
    if fit is None or not fit.ok or curvature is None:
        return None  # the fit checks the same draws (a mean-field fit read from the cache has none here)
    return no_strict_maximum(curvature)


def no_strict_maximum(curvature: Curvature) -> str | None:
    """None, or the one-line reason ``-grad^2 ELBO`` averaged over the draws is not positive definite.

    ``applicability`` (when the mean-field fit ran in this process) and the fit itself (when it
    was read from the cache) ask the same question of the same seeded draws, so a cold and a
    warm run skip with the same reason.
    """
    B = curvature.blocks.sum(0) / curvature.counts.sum()
    smallest = float(np.linalg.eigvalsh(B)[0])
    if smallest > 0:
        return None
    return (
        "the ELBO's Hessian in (mu, log sigma) is not negative definite at the mean-field fit (smallest "
        f"eigenvalue of its negative {smallest:.3g} over {curvature.draws} draws): no strict local maximum, "
        "so no linear response"
    )


def meanfield_curvature(run: ModelRun) -> tuple[Fit, Curvature, bool]:
    """The mean-field fit and its curvature draws: reused from ``svi_meanfield`` when it ran."""
    from study.methods.svi import fit_svi_meanfield

    fit = run.fits.get("svi_meanfield")
    reused = fit is not None and fit.ok
    if not reused:
        fit = fit_svi_meanfield(run)
    curvature = run.cache.get("meanfield_curvature")
    if curvature is None or not np.array_equal(curvature.mean, fit.mean) or not np.array_equal(curvature.sd, fit.sd):
        curvature = expected_curvature(
            run.joint, fit.mean, fit.sd, run.settings.curvature_draws, run.seed("svi_meanfield/curvature")
        )
    return fit, curvature, reused


def fit_svi_meanfield_lr(run: ModelRun) -> Fit:
    """``N(mu, Sigma_LR)``: the mean-field fit with its linear-response covariance."""
    start = time.perf_counter()
    meanfield, curvature, reused = meanfield_curvature(run)
    reason = no_strict_maximum(curvature)
    if reason is not None:
        return run.new_fit("svi_meanfield_lr", status=SKIPPED, reason=reason)
    lr_start = time.perf_counter()
    result = linear_response_from_curvature(curvature)
    mean = meanfield.mean.copy()
    draws = gaussian_draws(mean, result["covariance"], run.settings.draws, run.seed("svi_meanfield_lr/draws"))
    return run.new_fit(
        "svi_meanfield_lr",
        mean=mean,
        sd=result["sd"],
        draws=draws,
        info={
            "wall_seconds": time.perf_counter() - start,
            "linear_response_seconds": time.perf_counter() - lr_start,
            "reused_svi_meanfield": reused,
            "curvature_draws": curvature.draws,
            "jackknife_groups": int(curvature.blocks.shape[0]),
            "sd_se": result["sd_se"].tolist(),
            "sd_se_covers": "the Hessian draws (delete-a-group jackknife), not the error of the mean-field fit",
            "min_eigenvalue": result["min_eigenvalue"],
            "cross_block": result["cross_block"],
            "max_sd_over_meanfield": float(np.max(result["sd"] / meanfield.sd)),
        },
    )
