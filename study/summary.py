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


def sd_ratios(model: ModelResult, numerator: str, denominator: str) -> np.ndarray | None:
    """``sd[numerator] / sd[denominator]`` per parameter, shape ``(d,)``; None if either is missing."""
    top, bottom = model.fits.get(numerator), model.fits.get(denominator)
    if top is None or bottom is None or not top.ok or not bottom.ok:
        return None
    return np.asarray(top.sd) / np.asarray(bottom.sd)


def describe(ratios: np.ndarray, names: list[str]) -> dict:
    """Median, range and the worst parameter (farthest from 1 on a log scale)."""
    worst = int(np.argmax(np.abs(np.log(ratios))))
    return {
        "median": float(np.median(ratios)),
        "min": float(np.min(ratios)),
        "max": float(np.max(ratios)),
        "worst": float(ratios[worst]),
        "worst_parameter": names[worst],
        "n": int(len(ratios)),
    }


def model_answer(model: ModelResult) -> dict:
    out: dict = {}
    for key, (numerator, denominator) in COMPARISONS.items():
        ratios = sd_ratios(model, numerator, denominator)
        if ratios is not None:
            out[key] = describe(ratios, model.param_names)
    collapse = model.fits.get("expected_loss")
    svi = model.fits.get(SVI)
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
    """Per-model answers plus the pooled view across models."""
    per_model = {m.name: model_answer(m) for m in study.models}
    pooled: dict = {}
    for key in COMPARISONS:
        values = [sd_ratios(m, *COMPARISONS[key]) for m in study.models]
        names = [f"{m.name}: {p}" for m, v in zip(study.models, values) if v is not None for p in m.param_names]
        values = [v for v in values if v is not None]
        if values:
            pooled[key] = describe(np.concatenate(values), names)
    falls = [a["expected_loss"]["final_sigma_over_svi"]["median"] for a in per_model.values()
             if "final_sigma_over_svi" in a.get("expected_loss", {})]
    if falls:
        pooled["expected_loss_final_sigma_over_svi_median"] = {
            "median": float(np.median(falls)), "max": float(np.max(falls)), "n_models": len(falls)
        }
    return {"models": per_model, "pooled": pooled}
