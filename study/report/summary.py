"""The answer in numbers: how the mean-field sigma relates to curvature and to the truth.

Every ratio carries its Monte Carlo standard error where one is known: the
seed-to-seed error of ``svi_meanfield`` (``--seeds``), the jackknife error of
``svi_meanfield_lr``, the Monte Carlo error of a sampled reference's sd (ArviZ
``mcse(method="sd")``); the Laplace sds and an analytic reference are exact.
A single-seed fit (``svi_lowrank``, ``svi_fullrank``) has no estimate of its
optimiser noise: its ratio's SE covers the reference only and says so.
"""

from __future__ import annotations

import warnings

import numpy as np

from study.core.results import OK, ModelResult
from study.core.results import StudyResult

SVI = "svi_meanfield"
COMPARISONS = {
    "svi_over_laplace_diag": (SVI, "laplace_diag"),
    "svi_over_laplace_full": (SVI, "laplace_full"),
    "svi_over_reference": (SVI, "reference"),
    "laplace_diag_over_reference": ("laplace_diag", "reference"),
    "laplace_full_over_reference": ("laplace_full", "reference"),
    "lr_over_reference": ("svi_meanfield_lr", "reference"),
    "lowrank_over_reference": ("svi_lowrank", "reference"),
    "fullrank_over_reference": ("svi_fullrank", "reference"),
}
# Deterministic given the model (exact Hessian at the MAP, closed forms): no Monte Carlo error.
EXACT = ("laplace_full", "laplace_diag", "laplace_torch_full", "laplace_torch_diag")
# How much of the mean-field sigma's gap to the reference each richer method closes.
GAP_METHODS = ("svi_meanfield_lr", "svi_lowrank", "svi_fullrank", "laplace_full")


def sd_standard_error(model: ModelResult, method: str) -> tuple[np.ndarray | None, bool]:
    """Monte Carlo SE of a fit's sds, shape ``(d,)``, and whether it covers all the fit's noise.

    ``(None, False)`` when nothing is known; ``(zeros, True)`` for exact methods.
    """
    fit = model.fits.get(method)
    if fit is None or not fit.ok:
        return None, False
    d = len(fit.sd)
    if method in EXACT or (method == "reference" and fit.info.get("kind") == "analytic"):
        return np.zeros(d), True
    if fit.info.get("sd_se") is not None:
        return np.asarray(fit.info["sd_se"], dtype=float), method != "svi_meanfield_lr"
    if method == "reference" and fit.draws is not None:
        import arviz as az

        dataset = az.convert_to_dataset({"z": fit.draws}, dims={"z": ["parameter"]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(az.mcse(dataset, method="sd")["z"].values, dtype=float), True
    return None, False


def ratio_standard_error(model: ModelResult, numerator: str, denominator: str) -> tuple[np.ndarray | None, bool]:
    """SE of ``sd[numerator] / sd[denominator]`` by the delta method (independent errors).

    Returns the SE ``(d,)`` (None when neither side has one) and whether it is complete
    (both sides' errors known).
    """
    ratios = sd_ratios(model, numerator, denominator)
    if ratios is None:
        return None, False
    top, top_complete = sd_standard_error(model, numerator)
    bottom, bottom_complete = sd_standard_error(model, denominator)
    if top is None and bottom is None:
        return None, False
    relative = np.zeros_like(ratios)
    if top is not None:
        relative = relative + (top / np.asarray(model.fits[numerator].sd)) ** 2
    if bottom is not None:
        relative = relative + (bottom / np.asarray(model.fits[denominator].sd)) ** 2
    return np.abs(ratios) * np.sqrt(relative), top_complete and bottom_complete


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


def describe(ratios: np.ndarray, names: list[str], se: np.ndarray | None = None, se_complete: bool = True) -> dict:
    """Median, quartiles, range, the worst parameter (farthest from 1 on a log scale) and
    the share of parameters within a factor ``BAND`` of 1.

    With ``se`` (shape ``(d,)``): ``worst_se`` is the worst parameter's SE and ``median_se``
    the median of the per-parameter SEs (the typical Monte Carlo error of one ratio; the
    median of ``d`` ratios is at least as precise). ``se_complete`` False: the SE leaves
    out a source of error (a single-seed fit's optimiser noise).
    """
    distance = np.abs(np.log(ratios))
    worst = int(np.argmax(distance))
    out = {
        "median": float(np.median(ratios)),
        "q25": float(np.quantile(ratios, 0.25)),
        "q75": float(np.quantile(ratios, 0.75)),
        "min": float(np.min(ratios)),
        "max": float(np.max(ratios)),
        "worst": float(ratios[worst]),
        "worst_parameter": names[worst],
        "share_within_band": float(np.mean(distance < np.log(BAND))),
        "n": int(len(ratios)),
        "median_se": None,
        "worst_se": None,
        "se_complete": False,
    }
    if se is not None:
        out.update(median_se=float(np.median(se)), worst_se=float(se[worst]), se_complete=bool(se_complete))
    return out


def gap_closed(model: ModelResult, method: str) -> float | None:
    """``1 - median |log(sd_method / ref)| / median |log(sigma_SVI / ref)|``.

    1: the method removes the mean-field error entirely; 0: no better than mean-field;
    negative: worse. None without the fits or when mean-field has no real gap (median
    |log ratio| below 0.05, where the share would be a ratio of small noisy numbers).
    """
    svi = sd_ratios(model, SVI, "reference")
    other = sd_ratios(model, method, "reference")
    if svi is None or other is None:
        return None
    gap = float(np.median(np.abs(np.log(svi))))
    if gap < 0.05:
        return None
    return 1.0 - float(np.median(np.abs(np.log(other)))) / gap


def model_answer(model: ModelResult) -> dict:
    out: dict = {}
    untrusted = reference_untrusted(model)
    if untrusted is not None:
        out["reference_untrusted"] = untrusted
    for key, (numerator, denominator) in COMPARISONS.items():
        ratios = sd_ratios(model, numerator, denominator)
        if ratios is not None:
            se, complete = ratio_standard_error(model, numerator, denominator)
            out[key] = describe(ratios, model.param_names, se, complete)
    gaps = {m: gap_closed(model, m) for m in GAP_METHODS}
    gaps = {m: g for m, g in gaps.items() if g is not None}
    if gaps:
        out["gap_closed"] = gaps
    svi_fit = model.fits.get(SVI)
    if svi_fit is not None and svi_fit.ok and "fixed_point" in svi_fit.info:
        fixed = svi_fit.info["fixed_point"]
        if "diagnosis" in fixed:
            out["fixed_point"] = {
                "verdict": fixed["diagnosis"]["verdict"],
                "max_abs_r": fixed["diagnosis"]["max_abs_r"],
                "max_abs_z": fixed["diagnosis"]["max_abs_z"],
                "n_off": len(fixed["diagnosis"]["off"]),
                "n": len(fixed["r"]),
                "seeds": svi_fit.info.get("seeds"),
                "sd_rel_se": svi_fit.info.get("sd_rel_se"),
            }
    ablation = model.fits.get("kl_ablation")
    if ablation is not None and ablation.ok:
        out["kl_ablation"] = {
            "outcome": ablation.info["outcome"],
            "arms": {arm: {k: a[k] for k in ("verdict", "median_final_over_full", "median_log_sigma_slope_per_1000_steps")}
                     for arm, a in ablation.info["arms"].items()},
        }
    sweep = model.fits.get("data_sweep")
    if sweep is not None and sweep.ok:
        out["data_sweep"] = {"sizes": sweep.info["sizes"], "slopes": {m: v["median"] for m, v in sweep.info["slopes"].items()},
                             "slopes_last_doubling": {m: v["median_last_doubling"] for m, v in sweep.info["slopes"].items()}}
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
            se, complete = ratio_standard_error(model, "expected_loss", SVI)
            entry["final_sigma_over_svi"] = describe(
                np.asarray(collapse.sd) / np.asarray(svi.sd), model.param_names, se, complete
            )
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
        errors = [ratio_standard_error(m, *COMPARISONS[key]) for m, v in zip(models, values) if v is not None]
        values = [v for v in values if v is not None]
        if values:
            known = all(se is not None for se, _ in errors)
            se = np.concatenate([se for se, _ in errors]) if known else None
            pooled[key] = describe(np.concatenate(values), names, se, known and all(c for _, c in errors))
    falls = [a["expected_loss"]["final_sigma_over_svi"]["median"] for a in per_model.values()
             if "final_sigma_over_svi" in a.get("expected_loss", {})]
    if falls:
        pooled["expected_loss_final_sigma_over_svi_median"] = {
            "median": float(np.median(falls)), "max": float(np.max(falls)), "n_models": len(falls)
        }
    if untrusted:
        pooled["untrusted_references"] = sorted(untrusted)
    return {"models": per_model, "pooled": pooled}


def usable_fit(model: ModelResult, method: str):
    """The model's fit by ``method`` when it ran and is usable (ok or flagged), else None."""
    fit = model.fits.get(method)
    return fit if fit is not None and fit.ok else None


def usable_models(study: StudyResult) -> list[ModelResult]:
    """The models that ran (status ok)."""
    return [m for m in study.models if m.status == OK]


# Per-parameter figures and tables show at most this many parameters. A model with more
# shows a stated subset: the SHOWN_EXTREMES smallest and largest σ_SVI / (1/√Hᵢᵢ) (or sd),
# plus a random sample of the rest (seeded by the model's name, so the report is stable).
# comparison.csv and results.json always hold every parameter.
MAX_SHOWN_PARAMETERS = 32
SHOWN_EXTREMES = 10


def shown_parameters(model: ModelResult) -> tuple[np.ndarray, str]:
    """Indices of the parameters the per-parameter figures and tables show, and a sentence saying which.

    All of them (and ``""``) up to ``MAX_SHOWN_PARAMETERS``; above it the
    ``SHOWN_EXTREMES`` smallest and largest by σ_SVI / (1/√Hᵢᵢ) (else by the sd of
    the first usable fit), and a uniform random sample of the others to make up
    ``MAX_SHOWN_PARAMETERS``, in parameter order.
    """
    import zlib

    d = len(model.param_names)
    if d <= MAX_SHOWN_PARAMETERS:
        return np.arange(d), ""
    score, label = sd_ratios(model, SVI, "laplace_diag"), "σ_SVI / (1/√Hᵢᵢ)"
    if score is None:
        fit = next((f for f in model.fits.values() if f.ok and f.sd is not None and len(f.sd) == d), None)
        score, label = (None, "") if fit is None else (np.asarray(fit.sd), f"{fit.method} sd")
    chosen: list[int] = []
    if score is not None:
        order = np.argsort(np.nan_to_num(np.log(np.abs(score) + 1e-300), nan=0.0), kind="stable")
        chosen = sorted(set(order[:SHOWN_EXTREMES].tolist()) | set(order[-SHOWN_EXTREMES:].tolist()))
    rest = np.setdiff1d(np.arange(d), chosen)
    rng = np.random.default_rng(zlib.crc32(model.name.encode("utf-8", "surrogatepass")))
    sample = rng.choice(rest, size=MAX_SHOWN_PARAMETERS - len(chosen), replace=False)
    shown = np.sort(np.concatenate([np.asarray(chosen, dtype=int), sample]))
    how = (f"the {SHOWN_EXTREMES} smallest and {SHOWN_EXTREMES} largest {label} and {len(sample)} drawn at "
           "random from the others" if chosen else f"{len(sample)} drawn at random")
    text = (f"{d} parameters: per-parameter figures and tables show {len(shown)} of them ({how}); "
            f"comparison.csv and results.json hold all {d}.")
    return shown, text
