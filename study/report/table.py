"""The tidy comparison table: one row per (model, parameter, method).

``predicted_shrink`` (with ``predicted_shrink_se``) is the reference's prediction of the
mean-field sd ratio sigma_i / reference sd_i = sqrt(1 - R_i^2) (``study.methods.reference.shrink_law``),
on every row of its parameter; empty where the reference gives no covariance.
"""

from __future__ import annotations

import csv
import io
import math

from study.core.results import OK, ModelResult
from study.core.results import StudyResult

COLUMNS = ("model", "parameter", "method", "mean", "sd", "ref_mean", "ref_sd", "sd_ratio", "predicted_shrink",
           "predicted_shrink_se", "status", "reason")


def predicted_shrink(model: ModelResult) -> tuple[list | None, list | None]:
    """The reference's ``predicted_shrink`` and its SE (lists of length ``d``), or ``(None, None)``."""
    ref = model.reference
    info = ref.info if ref is not None else {}
    shrink, se = info.get("predicted_shrink"), info.get("predicted_shrink_se")
    if shrink is None or len(shrink) != len(model.param_names):
        return None, None
    return list(shrink), list(se) if se is not None else [None] * len(shrink)


def number(x: float | None) -> str:
    """Ten significant digits: enough for every comparison, stable across runs."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "" if x is None else str(x)
    return f"{float(x):.10g}"


def model_rows(model: ModelResult) -> list[dict]:
    """Rows of one model; a failed or skipped fit (or model) gets one row with its reason."""
    if model.status != OK:
        return [{"model": model.name, "parameter": "", "method": "", "status": model.status, "reason": model.reason}]
    ref = model.reference
    shrink, shrink_se = predicted_shrink(model)
    rows = []
    for method, fit in model.fits.items():
        if not fit.ok:
            rows.append({"model": model.name, "parameter": "", "method": method, "status": fit.status, "reason": fit.reason})
            continue
        for i, parameter in enumerate(model.param_names):
            ref_sd = ref.sd[i] if ref is not None else None
            rows.append(
                {
                    "model": model.name,
                    "parameter": parameter,
                    "method": method,
                    "mean": fit.mean[i],
                    "sd": fit.sd[i],
                    "ref_mean": ref.mean[i] if ref is not None else None,
                    "ref_sd": ref_sd,
                    "sd_ratio": fit.sd[i] / ref_sd if ref_sd else None,
                    "predicted_shrink": shrink[i] if shrink is not None else None,
                    "predicted_shrink_se": shrink_se[i] if shrink is not None else None,
                    "status": fit.status,
                    "reason": fit.reason,  # empty unless the fit is flagged
                }
            )
    return rows


def comparison_rows(study: StudyResult) -> list[dict]:
    return [row for model in study.models for row in model_rows(model)]


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: number(v) if isinstance(v, float) else ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()
