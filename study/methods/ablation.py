"""Which term of the KL stops the sigma collapse? A 2x2 ablation (method ``kl_ablation``).

The negative ELBO of the mean-field guide splits into the expected negative
log-likelihood, the expected negative log prior (in unconstrained coordinates,
Jacobian included) and minus the entropy ``sum_i log sigma_i + const``. Four
runs of the same ``AutoNormal`` guide switch the last two on and off:

==========================  =======  ========
arm                          prior    entropy
==========================  =======  ========
``full``: the ELBO             on       on
``entropy_only`` (flat prior)  off      on
``prior_only``                 on       off
``neither``: expected loss     off      off
==========================  =======  ========

Every arm uses the same optimiser, learning rate (the constant
``collapse_lr``: a decaying one would slow the very collapse under test),
steps, start (means at the MAP, sigma at ``study.methods.svi.sigma_start``) and seed, hence the
same noise draws step for step (common random numbers). ``neither`` is exactly
the ``expected_loss`` method, whose fit is reused when it ran.

Why the entropy and not the prior: the prior's pull on sigma is
``d/dsigma E_q[-log p(z)] = sigma / s0^2 > 0`` for a ``N(0, s0^2)`` prior, a
push *down*, like the likelihood's ``sigma E_q[H_ii]``; only the entropy's
``-1/sigma`` pushes up, and it grows without bound as sigma falls.
"""

from __future__ import annotations

import time

import numpy as np

from study.core.context import ModelRun
from study.core.results import Fit
from study.methods.svi import SVIRun, _log_sigma_slope, optimise, scale_plan

ARMS = {
    "full": ("full ELBO (prior + entropy)", True, True),
    "entropy_only": ("entropy only (flat prior)", False, True),
    "prior_only": ("prior only (no entropy)", True, False),
    "neither": ("neither (expected loss)", False, False),
}
# An arm has collapsed when every sigma ended below this fraction of the full arm's and
# log sigma was still falling at least this fast (per 1000 steps) at the end.
COLLAPSED_BELOW = 0.1
FALLING_FASTER_THAN = -0.5
# An arm is stable when every sigma ended within a factor 2 of the full arm's with a
# log-sigma trend below this size (per 1000 steps; the constant step size leaves jitter).
STABLE_TREND = 0.1


def applicability(run: ModelRun) -> str | None:
    if run.name in run.settings.ablation_models:
        return None
    chosen = ", ".join(run.settings.ablation_models) or "none"
    return f"runs on the models in Settings.ablation_models only ({chosen}): three extra SVI runs per model"


def _arm_summary(result: SVIRun, full_sd: np.ndarray | None) -> dict:
    slope = _log_sigma_slope(result)
    out = {
        "final_sd": result.last_sd.tolist(),
        "average_sd": result.sd.tolist(),
        "log_sigma_slope_per_1000_steps": slope.tolist(),
        "median_log_sigma_slope_per_1000_steps": float(np.median(slope)),
        "wall_seconds": result.wall_seconds,
        "jit": result.jit,
    }
    if full_sd is not None:
        ratio = result.last_sd / full_sd
        out["final_over_full"] = ratio.tolist()
        out["median_final_over_full"] = float(np.median(ratio))
        if np.all(ratio < COLLAPSED_BELOW) and np.all(slope < FALLING_FASTER_THAN):
            out["verdict"] = "collapsed"
        elif np.all((ratio > 0.5) & (ratio < 2.0)) and np.all(np.abs(slope) < STABLE_TREND):
            out["verdict"] = "stable"
        else:
            out["verdict"] = "unclear"
    return out


def _from_expected_loss(fit: Fit) -> SVIRun:
    """The ``expected_loss`` fit as the ``neither`` arm (it is that very run)."""
    t = fit.trajectory
    return SVIRun(
        mean=np.asarray(fit.mean), sd=np.asarray(fit.sd), last_mean=np.asarray(fit.mean),
        last_sd=np.asarray(fit.sd), steps=fit.info["steps"], loss=np.asarray(t["loss"]),
        record_steps=np.asarray(t["step"]), log_sigma=np.asarray(t["log_sigma"]), sigma_drift=float("nan"),
        wall_seconds=fit.info["wall_seconds"], init_from="", jit=bool(fit.info.get("jit")),
    )


def fit_kl_ablation(run: ModelRun) -> Fit:
    """Four runs of the mean-field guide; ``mean``/``sd`` are the full arm's iterate averages."""
    s = run.settings
    start = time.perf_counter()
    seed = run.seed("expected_loss")  # the same draws as the expected_loss method
    results: dict[str, SVIRun] = {}
    reused = False
    for arm, (_, prior, entropy) in ARMS.items():
        previous = run.fits.get("expected_loss")
        if arm == "neither" and previous is not None and previous.ok and previous.trajectory is not None:
            results[arm] = _from_expected_loss(previous)
            reused = True
            continue
        results[arm] = optimise(
            run, f"kl_ablation/{arm}", include_prior=prior, include_entropy=entropy,
            constant_lr=s.collapse_lr, seed=seed, steps=s.collapse_steps,
        )
    full = results["full"]
    arms = {}
    for arm, result in results.items():
        arms[arm] = {"label": ARMS[arm][0], "include_prior": ARMS[arm][1], "include_entropy": ARMS[arm][2]}
        arms[arm].update(_arm_summary(result, full.sd))
    verdicts = {arm: a["verdict"] for arm, a in arms.items()}
    with_entropy = [verdicts["full"], verdicts["entropy_only"]]
    without = [verdicts["prior_only"], verdicts["neither"]]
    if all(v == "stable" for v in with_entropy) and all(v == "collapsed" for v in without):
        outcome = "entropy anchors sigma"
    elif all(v == "stable" for v in (verdicts["full"], verdicts["prior_only"])) and verdicts["neither"] == "collapsed":
        outcome = "prior anchors sigma"
    else:
        outcome = "mixed"
    trajectory = {"step": full.record_steps, "loss": full.loss[full.record_steps], "log_sigma": full.log_sigma}
    for arm, result in results.items():
        trajectory[f"{arm}/step"] = result.record_steps
        trajectory[f"{arm}/loss"] = (
            result.loss if len(result.loss) == len(result.record_steps) else result.loss[result.record_steps]
        )
        trajectory[f"{arm}/log_sigma"] = result.log_sigma
    return run.new_fit(
        "kl_ablation",
        mean=full.mean,
        sd=full.sd,
        draws=None,
        trajectory=trajectory,
        info={
            "wall_seconds": time.perf_counter() - start,
            "steps": full.steps,
            "particles": scale_plan(run)["particles"],
            "constant_lr": s.collapse_lr,
            "reused_expected_loss": reused,
            "arms": arms,
            "outcome": outcome,
            "sd_is": "the full arm's iterate average over the last quarter (constant learning rate)",
        },
    )
