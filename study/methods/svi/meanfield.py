"""The mean-field fit of the study: ``svi_seeds`` seeds, their pooled sigma and fixed point,
and the sigma-collapsing expected-loss run."""

from __future__ import annotations

import math
import time

import numpy as np

from study.core.context import ModelRun
from study.core.draws import diagonal_gaussian_draws
from study.core.results import Fit
from study.methods.svi.loop import SVIRun, _log_sigma_slope, _trajectory, elbo_estimate, optimise
from study.methods.svi.plan import LARGE_RESIDUAL_PAIRS, scale_plan
from study.methods.svi.seeds import batches_seeds, fit_seeds, seeds_wall_seconds
from study.methods.svi.stopping import drift_beyond_noise


def meanfield_seed(run: ModelRun, k: int) -> int:
    """Seed of the ``k``-th ``svi_meanfield`` run; run 0 keeps the method's own seed."""
    return run.seed("svi_meanfield") if k == 0 else run.seed(f"svi_meanfield/seed{k}")


def seed_standard_errors(values: np.ndarray) -> dict:
    """Monte Carlo error of a per-parameter mean over ``K`` seeds, values of shape ``(K, d)``.

    The optimiser steps ``mu`` and ``log sigma`` in units of sigma (``study.methods.optim``), so the
    seed-to-seed noise of sigma is relative and about the same for every parameter: the
    relative spread is pooled over parameters (``d (K - 1)`` degrees of freedom, where a
    per-parameter estimate from 3 seeds has 2). Both are returned.

    Returns
    -------
    dict
        ``rel_se`` (float: pooled relative SE of the mean), ``se`` ``(d,)`` (``rel_se`` times
        the mean), ``se_per_parameter`` ``(d,)`` (unpooled); all None when ``K < 2``.
    """
    K, d = values.shape
    if K < 2:
        return {"rel_se": None, "se": None, "se_per_parameter": None}
    centre = values.mean(0)
    relative = values / centre - 1.0
    rel_se = math.sqrt(float((relative**2).sum()) / (d * (K - 1)) / K)
    return {
        "rel_se": rel_se,
        "se": centre * rel_se,
        "se_per_parameter": values.std(0, ddof=1) / math.sqrt(K),
    }


def fit_svi_meanfield(run: ModelRun) -> Fit:
    """Mean-field Gaussian (``AutoNormal``'s parameters) by the full ELBO, vectorised particles.

    ``svi_seeds`` independent runs, as one vectorised fit where they can share it
    (``study.methods.svi.seeds``); ``mean``/``sd`` are their averages, ``info`` holds the
    per-seed values, the standard error of ``sd`` and the fixed-point residual
    ``sigma_i^2 E_q[H_ii] - 1`` (``study.checks.fixed_point``), checked per seed at that
    seed's own ``q`` and pooled (``seed_fixed_points``).
    """
    from study.core.errors import one_line

    s = run.settings
    K = max(1, s.svi_seeds)
    batched = batches_seeds(run)
    results = fit_seeds(run, [meanfield_seed(run, k) for k in range(K)])
    result = results[0]
    means = np.stack([r.mean for r in results])  # (K, d)
    sds = np.stack([r.sd for r in results])
    mean, sd = means.mean(0), sds.mean(0)
    errors = seed_standard_errors(sds)
    # Signed relative change of sigma between the halves of the averaging window, seed-averaged.
    changes = np.mean(np.stack([r.sigma_changes for r in results]), axis=0)
    elbo, elbo_se = elbo_estimate(run, mean, sd, run.seed("svi_meanfield/elbo"))
    # Each seed's drift beyond its noise, the seeds' changes tested as one family of K d.
    drifts = [drift_beyond_noise(r.sigma_changes, r.sigma_change_se, r.sigma_change_dof, family=K * len(sd))
              for r in results]
    spread = float(np.max(means.std(0, ddof=1) / sd)) if K > 1 else None
    info = {
        "wall_seconds": seeds_wall_seconds(results, batched),
        "seeds_batched": batched,
        "steps": result.steps,
        "steps_per_seed": [r.steps for r in results],
        "step_cap": max(10, int(round(s.svi_steps * run.spec.svi_steps_scale))),
        "stopped_early": any(r.steps < max(10, int(round(s.svi_steps * run.spec.svi_steps_scale))) for r in results),
        "final_elbo": elbo,
        "final_elbo_se": elbo_se,
        "sigma_drift": max(r.sigma_drift for r in results),
        "sigma_drift_beyond_noise": max(drifts),
        "sigma_drift_beyond_noise_per_seed": drifts,
        "sigma_change_per_parameter": changes.tolist(),
        "init": result.init_from,
        "sigma_start": result.sigma_from,
        "jit": all(r.jit for r in results),
        "averaged_over_last_steps": result.averaged_steps,
        "per_seed_wall_seconds": [r.wall_seconds for r in results],
        "seeds": K,
        "mean_per_seed": means.tolist(),
        "sd_per_seed": sds.tolist(),
        "sd_se": None if errors["se"] is None else errors["se"].tolist(),
        "sd_rel_se": errors["rel_se"],
        "sd_se_per_parameter": None if errors["se_per_parameter"] is None else errors["se_per_parameter"].tolist(),
        # Seeds that settle in different places (a network's hidden units swapped or turned
        # off, a multimodal posterior) make the averaged mean no seed's fit; this is the largest
        # seed-to-seed sd of a mean in units of its sigma (``SEEDS_APART``).
        "mean_spread_over_sigma": spread,
        "seeds_apart": spread is not None and spread > SEEDS_APART,
    }
    plan = scale_plan(run)
    info["scale_plan"] = plan
    info["particles"] = plan["particles"]
    info["data_subsampling"] = (
        "full batch" if plan["subsample_size"] is None else f"mini-batches of {plan['subsample_size']} rows"
    )
    info["fit_dtype"] = plan["dtype"]
    start = time.perf_counter()
    try:
        info["fixed_point"], info["fixed_point_per_seed"] = seed_fixed_points(run, results, errors["rel_se"], plan,
                                                                              changes)
    except Exception as error:  # the fit stands; the check reports why it could not run
        info["fixed_point"] = {"error": one_line(error)}
    info["fixed_point_seconds"] = time.perf_counter() - start
    return run.new_fit(
        "svi_meanfield",
        mean=mean,
        sd=sd,
        draws=diagonal_gaussian_draws(mean, sd, s.draws, run.seed("svi_meanfield/draws")),
        trajectory=_trajectory(result),
        info=info,
    )


# Seeds whose means differ by more than this many sigma (the largest seed-to-seed sd of a
# mean over its sigma) have settled in different places: the report says so.
SEEDS_APART = 1.0


def seed_fixed_points(run: ModelRun, results: list[SVIRun], sd_rel_se: float | None, plan: dict,
                      changes: np.ndarray) -> tuple[dict, list[dict]]:
    """The fixed-point residual of each seed at its own ``q``, and their pool.

    Seed ``k``'s residual ``r_ik = sigma_ik^2 E_{q_k}[H_ii] - 1`` is estimated at
    ``q_k = N(mu_k, diag sigma_k^2)`` (``study.checks.fixed_point``): the exact Hessian diagonal
    at ``curvature_draws / K`` draws per seed (so the check costs what one check at the
    averaged ``q`` did), or, in the large regime, the gradient-only estimator at
    ``LARGE_RESIDUAL_PAIRS`` pairs per seed. ``changes``: sigma's seed-averaged change over the
    averaging window, for the pooled diagnosis. Each seed's SE adds its own sigma's error, the
    seed-to-seed relative sd ``sd_rel_se sqrt(K)``. The pool (``pool_seed_residuals``) averages
    the residuals, never the means: it is what the fit reports as ``info["fixed_point"]``. The
    pool's ``d`` residuals and the seeds' ``K d`` are one family of tests (``z_limit`` over
    ``(K + 1) d``), at the rate of one check (``study.checks.fixed_point.FAMILY_FALSE_ALARM``).

    Returns
    -------
    tuple
        The pooled residual with its ``diagnosis`` and ``by_site``, and per seed a dict of
        ``verdict``, ``max_abs_z``, ``off`` (how many parameters beyond the bound),
        ``z_limit``, ``text`` and ``by_site``.
    """
    from study.checks.fixed_point import (
        FIXED_POINT_ALL_COORDINATES, FIXED_POINT_SUBSET_DRAWS, diagnose, expected_curvature,
        fixed_point_residual, pool_seed_residuals, price_residual, residual_by_site, with_sigma_error,
    )

    s = run.settings
    K = len(results)
    d = run.joint.dim
    names = run.joint.param_names
    minibatch = plan["subsample_size"] is not None
    total = s.curvature_draws if d <= FIXED_POINT_ALL_COORDINATES else min(s.curvature_draws, FIXED_POINT_SUBSET_DRAWS)
    residuals = []
    for k, r in enumerate(results):
        seed = run.seed("svi_meanfield/curvature" if k == 0 else f"svi_meanfield/curvature/seed{k}")
        if plan["fixed_point"] == "price":
            residuals.append(price_residual(run.joint, r.mean, r.sd, LARGE_RESIDUAL_PAIRS, seed))
        else:
            curvature = expected_curvature(run.joint, r.mean, r.sd, math.ceil(total / K), seed)
            residuals.append(fixed_point_residual(curvature, None))
    per_seed = []
    family = d if K == 1 else (K + 1) * d
    seed_rel = None if sd_rel_se is None else sd_rel_se * math.sqrt(K)
    for r, residual in zip(results, residuals):
        own = with_sigma_error(residual, seed_rel)
        verdict = diagnose(own, r.sigma_changes, names, minibatch=minibatch, family=family)
        per_seed.append({
            "verdict": verdict["verdict"], "max_abs_z": verdict["max_abs_z"], "off": len(verdict["off"]),
            "z_limit": verdict["z_limit"], "text": verdict["text"], "by_site": residual_by_site(run.joint, own),
        })
    pooled = pool_seed_residuals(residuals, sd_rel_se)
    pooled["diagnosis"] = diagnose(pooled, changes, names, minibatch=minibatch, family=family)
    pooled["by_site"] = residual_by_site(run.joint, pooled)
    return pooled, per_seed


def fit_expected_loss(run: ModelRun) -> Fit:
    """The seed's objective: same guide, ``E_eps[-log p(y | mu + sigma eps)]`` only."""
    s = run.settings
    result = optimise(run, "expected_loss", include_prior=False, include_entropy=False, constant_lr=s.collapse_lr,
                      steps=s.collapse_steps)
    slope = _log_sigma_slope(result)
    return run.new_fit(
        "expected_loss",
        mean=result.last_mean,
        sd=result.last_sd,
        draws=diagonal_gaussian_draws(result.last_mean, result.last_sd, s.draws, run.seed("expected_loss/draws")),
        trajectory=_trajectory(result),
        info={
            "wall_seconds": result.wall_seconds,
            "steps": result.steps,
            "particles": scale_plan(run)["particles"],
            "jit": result.jit,
            "final_loss": float(result.loss[-20:].mean()),
            "log_sigma_slope_per_1000_steps": slope.tolist(),
            "median_log_sigma_slope_per_1000_steps": float(np.median(slope)),
        },
    )
