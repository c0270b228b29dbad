"""The answer in numbers: how the mean-field sigma relates to curvature and to the truth."""

from __future__ import annotations

import numpy as np

from .results import ModelResult
from .runner import StudyResult

SVI = "svi_meanfield"
COMPARISONS = {
    "svi_over_laplace_diag": (SVI, "laplace_diag"),
    "svi_over_laplace_full": (SVI, "laplace_full"),
    "svi_over_reference": (SVI, "reference"),
    "laplace_diag_over_reference": ("laplace_diag", "reference"),
    "laplace_full_over_reference": ("laplace_full", "reference"),
}

# A ratio within this factor of 1 counts as "agrees" (|log ratio| < log BAND).
BAND = 1.25
# A NUTS reference is trusted only when it mixed: R-hat at most MAX_R_HAT and bulk ESS
# at least MIN_ESS_BULK for every parameter (Vehtari et al. 2021 recommend 1.01 and
# 400 for final results; these looser limits only mark a chain that clearly failed).
MAX_R_HAT = 1.05
MIN_ESS_BULK = 100


def sd_ratios(model: ModelResult, numerator: str, denominator: str) -> np.ndarray | None:
    """``sd[numerator] / sd[denominator]`` per parameter, shape ``(d,)``; None if either is missing."""
    top, bottom = model.fits.get(numerator), model.fits.get(denominator)
    if top is None or bottom is None or not top.ok or not bottom.ok:
        return None
    return np.asarray(top.sd) / np.asarray(bottom.sd)


def reference_untrusted(model: ModelResult) -> dict | None:
    """Why a model's NUTS reference cannot be trusted, or None when it can (or is not NUTS).

    Returns ``{"max_r_hat", "min_ess_bulk", "reason"}``; ``reason`` is one line.
    """
    ref = model.reference
    if ref is None or ref.info.get("kind") != "NUTS":
        return None
    r_hat, ess = ref.info.get("max_r_hat"), ref.info.get("min_ess_bulk")
    problems = []
    if r_hat is not None and not r_hat <= MAX_R_HAT:  # NaN counts as failed
        problems.append(f"largest R-hat {r_hat:.3g} > {MAX_R_HAT}")
    if ess is not None and not ess >= MIN_ESS_BULK:
        problems.append(f"smallest bulk ESS {ess:.3g} < {MIN_ESS_BULK}")
    if not problems:
        return None
    return {"max_r_hat": r_hat, "min_ess_bulk": ess, "reason": "; ".join(problems)}


def describe(ratios: np.ndarray, names: list[str]) -> dict:
    """Median, quartiles, range, the worst parameter (farthest from 1 on a log scale) and
    the share of parameters within a factor ``BAND`` of 1."""
    distance = np.abs(np.log(ratios))
    worst = int(np.argmax(distance))
    return {
        "median": float(np.median(ratios)),
        "q25": float(np.quantile(ratios, 0.25)),
        "q75": float(np.quantile(ratios, 0.75)),
        "min": float(np.min(ratios)),
        "max": float(np.max(ratios)),
        "worst": float(ratios[worst]),
        "worst_parameter": names[worst],
        "share_within_band": float(np.mean(distance < np.log(BAND))),
        "n": int(len(ratios)),
    }


def model_answer(model: ModelResult) -> dict:
    out: dict = {}
    untrusted = reference_untrusted(model)
    if untrusted is not None:
        out["reference_untrusted"] = untrusted
    for key, (numerator, denominator) in COMPARISONS.items():
        ratios = sd_ratios(model, numerator, denominator)
        if ratios is not None:
            out[key] = describe(ratios, model.param_names)
    collapse = model.fits.get("expected_loss")
    svi = model.fits.get(SVI)
    if svi is not None and svi.ok and svi.info.get("sigma_drift") is not None:
        out["svi_sigma_drift"] = float(svi.info["sigma_drift"])
    if collapse is not None and collapse.ok:
        entry = {
            "median_log_sigma_slope_per_1000_steps": collapse.info.get("median_log_sigma_slope_per_1000_steps"),
            "steps": collapse.info.get("steps"),
        }
        if svi is not None and svi.ok:
            entry["final_sigma_over_svi"] = describe(np.asarray(collapse.sd) / np.asarray(svi.sd), model.param_names)
        out["expected_loss"] = entry
    return out


def study_answer(study: StudyResult) -> dict:
    """Per-model answers plus the pooled view across models.

    Models whose NUTS reference is untrusted (``reference_untrusted``) stay out of
    every pooled comparison against the reference; ``pooled["untrusted_references"]``
    lists them.
    """
    per_model = {m.name: model_answer(m) for m in study.models}
    pooled: dict = {}
    untrusted = {m.name for m in study.models if "reference_untrusted" in per_model[m.name]}
    for key in COMPARISONS:
        models = [m for m in study.models if not ("reference" in COMPARISONS[key] and m.name in untrusted)]
        values = [sd_ratios(m, *COMPARISONS[key]) for m in models]
        names = [f"{m.name}: {p}" for m, v in zip(models, values) if v is not None for p in m.param_names]
        values = [v for v in values if v is not None]
        if values:
            pooled[key] = describe(np.concatenate(values), names)
    falls = [a["expected_loss"]["final_sigma_over_svi"]["median"] for a in per_model.values()
             if "final_sigma_over_svi" in a.get("expected_loss", {})]
    if falls:
        pooled["expected_loss_final_sigma_over_svi_median"] = {
            "median": float(np.median(falls)), "max": float(np.max(falls)), "n_models": len(falls)
        }
    if untrusted:
        pooled["untrusted_references"] = sorted(untrusted)
    return {"models": per_model, "pooled": pooled}
