"""The answer in numbers: how the mean-field sigma relates to curvature and to the truth.

Every ratio carries its Monte Carlo standard error where one is known: the
seed-to-seed error of ``svi_meanfield`` (``--seeds``), the jackknife error of
``svi_meanfield_lr``, the Monte Carlo error of a sampled reference's sd (ArviZ
``mcse(method="sd")``); the Laplace sds and an analytic reference are exact.
A single-seed fit (``svi_lowrank``, ``svi_fullrank``) has no estimate of its
optimiser noise: its ratio's SE covers the reference only and says so.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from study.core.results import FLAGGED, OK, ModelResult
from study.core.results import StudyResult
from study.report.table import predicted_shrink

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
                # A flagged fit (σ still moving in its window at the step cap) has not settled,
                # whatever its residuals say.
                "flagged": svi_fit.status == FLAGGED,
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
        # The drift that Monte Carlo noise does not explain, where the fit measured it.
        out["svi_sigma_drift"] = float(svi.info.get("sigma_drift_beyond_noise", svi.info["sigma_drift"]))
    diagnosis = ((svi.info.get("fixed_point") or {}).get("diagnosis") or {}) if svi is not None and svi.ok else {}
    if diagnosis.get("max_abs_z") is not None and diagnosis["max_abs_z"] > diagnosis.get("z_limit", 3.0):
        out["svi_fixed_point_z"] = float(diagnosis["max_abs_z"])
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
    lists them. ``benchmark`` is ``benchmark_answer(study)`` (the published statistics
    over the models with a trusted reference), ``headline`` is ``headline_answer(study)``
    (the numbers of the three opening sentences), ``law`` is
    ``law_answer(study)`` (measured σ_SVI / ref sd against √(1 − Rᵢ²)), ``networks``
    is ``network_ratios(study)`` (σᵢ⁻²/Hᵢᵢ at the guide's mean per network without a reference).
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
    return {"models": per_model, "pooled": pooled, "benchmark": benchmark_answer(study),
            "headline": headline_answer(study), "law": law_answer(study), "networks": network_ratios(study)}


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


# -- the answer over the benchmark -----------------------------------------------------------
#
# The statistics that published studies of variational inference report over a suite of
# posteriors: per parameter the ratio sd / reference sd, pooled over every parameter of
# every model with a trusted reference; its median, its 10-90% range and the share of
# parameters within ±10% of the reference.

TOLERANCE = 0.10  # "within ±10%": |sd / reference sd - 1| <= TOLERANCE
LOW_QUANTILE, HIGH_QUANTILE = 0.10, 0.90
# The methods compared with the reference, in the order the tables list them.
BENCHMARK_METHODS = ("svi_meanfield", "svi_meanfield_lr", "svi_lowrank", "svi_fullrank", "laplace_full")
# Monte Carlo SE of a pooled statistic: each ratio redrawn from N(ratio, SE²) this many times
# (a fixed seed keeps the report deterministic); the SE estimate's own relative error is
# about 1/sqrt(2 * MEDIAN_SE_DRAWS), 2%.
MEDIAN_SE_DRAWS = 1000
MEDIAN_SE_SEED = 0
# Likely causes of a model's error, each read off a measured diagnostic by one threshold:
# - correlation: the marginal sd √(H⁻¹)ᵢᵢ exceeds the conditional sd 1/√Hᵢᵢ by more than
#   this factor for the median parameter (they are equal when the posterior's Hessian is
#   diagonal; Bishop, PRML §10.1.2);
CORRELATION_GAP = 1.25
# - non-Gaussian: √(H⁻¹)ᵢᵢ, exact for a Gaussian posterior, misses the reference sd by more
#   than this factor for the median parameter (exp(median |log ratio|));
NON_GAUSSIAN_GAP = 1.25
# - funnel: a scale parameter with hierarchical children (study.core.structure) whose
#   σ_SVI misses its reference sd by more than this factor.
FUNNEL_GAP = 1.25
N_WORST = 5


def pooled_statistics(ratios: np.ndarray, se: np.ndarray | None = None, se_complete: bool = True,
                      seed: int = MEDIAN_SE_SEED) -> dict:
    """The published statistics of a set of sd ratios, with their Monte Carlo SEs.

    Parameters
    ----------
    ratios : np.ndarray
        Shape ``(n,)``: sd / reference sd, one per parameter.
    se : np.ndarray, optional
        Shape ``(n,)``: each ratio's Monte Carlo SE (``ratio_standard_error``).
    se_complete : bool
        False when ``se`` leaves out a source of error (a single-seed fit's optimiser noise).
    seed : int
        Seed of the redraws that propagate ``se``.

    Returns
    -------
    dict
        ``n``, ``median``, ``q10``, ``q90``, ``share_within`` (share with |ratio − 1| ≤
        ``TOLERANCE``), ``median_se`` and ``share_se`` (None without ``se``),
        ``se_complete``. The SEs propagate the ratios' Monte Carlo errors: each ratio is
        redrawn ``MEDIAN_SE_DRAWS`` times from N(ratio, se²) and the statistic's sd over
        the redraws is its SE (a parametric bootstrap; Efron & Tibshirani 1993, §6.5). They
        do not include the spread over which models the benchmark happens to hold.
    """
    ratios = np.asarray(ratios, dtype=float)
    out = {
        "n": int(ratios.size),
        "median": float(np.median(ratios)),
        "q10": float(np.quantile(ratios, LOW_QUANTILE)),
        "q90": float(np.quantile(ratios, HIGH_QUANTILE)),
        "share_within": float(np.mean(np.abs(ratios - 1.0) <= TOLERANCE)),
        "median_se": None,
        "share_se": None,
        "se_complete": False,
    }
    if se is not None:
        se = np.asarray(se, dtype=float)
        noisy = ratios + se * np.random.default_rng(seed).standard_normal((MEDIAN_SE_DRAWS, ratios.size))
        # Rounded to 12 digits: a constant column's sd is a rounding residue, not an error.
        out["median_se"] = round(float(np.std(np.median(noisy, axis=1), ddof=1)), 12)
        out["share_se"] = round(float(np.std(np.mean(np.abs(noisy - 1.0) <= TOLERANCE, axis=1), ddof=1)), 12)
        out["se_complete"] = bool(se_complete)
    return out


def _pool(models: list[ModelResult], numerator: str, denominator: str) -> dict | None:
    """``pooled_statistics`` of ``numerator / denominator`` over every parameter of ``models``."""
    values, errors = [], []
    for model in models:
        ratios = sd_ratios(model, numerator, denominator)
        if ratios is not None:
            values.append(ratios)
            errors.append(ratio_standard_error(model, numerator, denominator))
    if not values:
        return None
    known = all(se is not None for se, _ in errors)
    se = np.concatenate([se for se, _ in errors]) if known else None
    out = pooled_statistics(np.concatenate(values), se, known and all(c for _, c in errors))
    out["n_models"] = len(values)
    return out


def _scale_parameters(model: ModelResult) -> list[int]:
    """Flat indices of the scale sites that have hierarchical children (``ModelResult.scale_children``)."""
    sites = model.scale_children or {}
    return [i for i, name in enumerate(model.param_names)
            if any(name == s or name.startswith(f"{s} (") or name.startswith(f"{s}[") for s in sites)]


def likely_causes(model: ModelResult) -> dict:
    """The measured diagnostics behind a model's error, and the causes their thresholds name.

    Returns
    -------
    dict
        ``correlation_gap``: median of √(H⁻¹)ᵢᵢ / (1/√Hᵢᵢ); ``non_gaussian_gap``:
        exp(median |log(√(H⁻¹)ᵢᵢ / reference sd)|); ``funnel_gap``: the largest factor by
        which σ_SVI misses the reference sd on a scale parameter with hierarchical children
        (None without one; ``funnel_scales`` names them); ``causes``: the subset of
        ``"correlation"``, ``"non-Gaussian"``, ``"funnel"`` whose threshold is exceeded;
        ``assessed``: the diagnostics that could be computed.
    """
    out: dict = {"correlation_gap": None, "non_gaussian_gap": None, "funnel_gap": None,
                 "funnel_scales": sorted(model.scale_children or {}), "causes": [], "assessed": []}
    marginal_over_conditional = sd_ratios(model, "laplace_full", "laplace_diag")
    if marginal_over_conditional is not None:
        out["correlation_gap"] = float(np.median(marginal_over_conditional))
        out["assessed"].append("correlation")
        if out["correlation_gap"] > CORRELATION_GAP:
            out["causes"].append("correlation")
    laplace = sd_ratios(model, "laplace_full", "reference")
    if laplace is not None:
        out["non_gaussian_gap"] = float(np.exp(np.median(np.abs(np.log(laplace)))))
        out["assessed"].append("non-Gaussian")
        if out["non_gaussian_gap"] > NON_GAUSSIAN_GAP:
            out["causes"].append("non-Gaussian")
    svi = sd_ratios(model, SVI, "reference")
    if model.scale_children is not None:
        out["assessed"].append("funnel")
        scales = _scale_parameters(model)
        if scales and svi is not None:
            out["funnel_gap"] = float(np.max(np.exp(np.abs(np.log(svi[scales])))))
            if out["funnel_gap"] > FUNNEL_GAP:
                out["causes"].append("funnel")
    return out


def benchmark_models(study: StudyResult) -> tuple[list[ModelResult], dict[str, str]]:
    """The models with a trusted reference, and why each other model is left out."""
    kept, left_out = [], {}
    for model in study.models:
        if model.status != OK:
            left_out[model.name] = f"{model.status}: {model.reason}"
        elif model.reference is None:
            left_out[model.name] = "no usable reference"
        elif reference_untrusted(model) is not None:
            left_out[model.name] = f"untrusted NUTS reference ({reference_untrusted(model)['reason']})"
        else:
            kept.append(model)
    return kept, left_out


def benchmark_answer(study: StudyResult) -> dict:
    """The answer over the benchmark: the published statistics, pooled and per model.

    Returns
    -------
    dict
        ``methods``: per method of ``BENCHMARK_METHODS``, ``pooled_statistics`` of sd /
        reference sd over every parameter of every model with a trusted reference (plus
        ``n_models``); ``svi_over_laplace_diag``: σ_SVI / (1/√Hᵢᵢ) over the same models;
        ``models``: the same per model, with ``typical_error`` (exp(median |log(σ_SVI /
        reference sd)|), the ranking) and ``likely_causes``; ``worst``: the names of the
        ``N_WORST`` models with the largest ``typical_error``, among those off by more than
        ``TOLERANCE``; ``left_out``: model -> why.
    """
    models, left_out = benchmark_models(study)
    out: dict = {"methods": {}, "models": {}, "worst": [], "left_out": left_out,
                 "n_models": len(models), "n_parameters": int(sum(len(m.param_names) for m in models))}
    for method in BENCHMARK_METHODS:
        pooled = _pool(models, method, "reference")
        if pooled is not None:
            out["methods"][method] = pooled
    diag = _pool(models, SVI, "laplace_diag")
    if diag is not None:
        out["svi_over_laplace_diag"] = diag
    for model in models:
        entry: dict = {"methods": {}}
        for method in BENCHMARK_METHODS:
            pooled = _pool([model], method, "reference")
            if pooled is not None:
                entry["methods"][method] = pooled
        diag = _pool([model], SVI, "laplace_diag")
        if diag is not None:
            entry["svi_over_laplace_diag"] = diag
        svi = sd_ratios(model, SVI, "reference")
        if svi is not None:
            entry["typical_error"] = float(np.exp(np.median(np.abs(np.log(svi)))))
        entry["likely_causes"] = likely_causes(model)
        out["models"][model.name] = entry
    ranked = sorted((name for name, e in out["models"].items() if "typical_error" in e),
                    key=lambda name: (-out["models"][name]["typical_error"], name))
    out["worst"] = [name for name in ranked if out["models"][name]["typical_error"] > 1 + TOLERANCE][:N_WORST]
    return out


def headline_answer(study: StudyResult) -> dict:
    """The numbers of the three opening sentences, each with its Monte Carlo SE.

    Returns
    -------
    dict
        ``proxy``: σ_SVI / (1/√Hᵢᵢ) over every parameter of the models with a trusted
        reference (``benchmark_models``; every model that ran when none has one), so that
        the three sentences speak of one set of models and a network's thousand weights do
        not outvote forty small models (``pooled_statistics``); ``over``: ``"trusted"`` or
        ``"all"``, which set; ``collapse``: the expected-loss run's final σ over σ_SVI
        over the same parameters, with ``n_falling`` (models whose log σ was still falling)
        and ``median_slope`` (median over models of the median slope of log σ per 1000 steps).
        The comparison with the reference is ``benchmark_answer``'s ``methods["svi_meanfield"]``.
    """
    usable = usable_models(study)
    trusted = {m.name for m in benchmark_models(study)[0]}
    models = [m for m in usable if m.name in trusted]
    out: dict = {"over": "trusted" if models else "all"}
    models = models or usable
    proxy = _pool(models, SVI, "laplace_diag")
    if proxy is not None:
        out["proxy"] = proxy
    collapse = _pool(models, "expected_loss", SVI)
    if collapse is not None:
        fits = [usable_fit(m, "expected_loss") for m in models if usable_fit(m, SVI) is not None]
        infos = [f.info for f in fits if f is not None]
        slopes = [i["median_log_sigma_slope_per_1000_steps"] for i in infos
                  if i.get("median_log_sigma_slope_per_1000_steps") is not None]
        collapse["n_falling"] = int(sum(s < 0 for s in slopes))
        collapse["n_slopes"] = len(slopes)
        collapse["median_slope"] = float(np.median(slopes)) if slopes else None
        steps = {i.get("steps") for i in infos}
        collapse["steps"] = steps.pop() if len(steps) == 1 else None
        out["collapse"] = collapse
    return out


# -- the networks' curvature ratios (``study.report.topics.networks`` draws and tabulates them) -------------

HESSIAN_SOURCES = ("hessian_diag", "laplace_diag")
GGN_SOURCES = ("ggn_diag", "laplace_torch_diag")
SIGMA_SOURCES = ("svi_meanfield", "ivon")


def _fit_ok(model: ModelResult, method: str):
    fit = model.fits.get(method)
    return fit if fit is not None and fit.ok and fit.sd is not None else None


def is_network(model: ModelResult) -> bool:
    """A network: the model has an ``ivon`` fit or a GGN-diagonal fit (methods for networks)."""
    return any(_fit_ok(model, m) is not None for m in ("ivon", "ggn_diag"))


def precision_of(model: ModelResult, sources: tuple[str, ...]) -> tuple[np.ndarray | None, str | None]:
    """``sd^-2`` of the first usable source, shape ``(d,)`` (NaN where the source has no value)."""
    for method in sources:
        fit = _fit_ok(model, method)
        if fit is not None:
            sd = np.asarray(fit.sd, dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(sd > 0, sd**-2.0, np.nan), method
    return None, None


def median_with_se(ratios: np.ndarray) -> tuple[float, float]:
    """Median of positive ``ratios`` and its SE (``1.2533 sd / sqrt(n)`` on the log scale, mapped back)."""
    logs = np.log(ratios[np.isfinite(ratios) & (ratios > 0)])
    if len(logs) == 0:
        return float("nan"), float("nan")
    centre = float(np.median(logs))
    se_log = 1.2533 * float(np.std(logs, ddof=1)) / math.sqrt(len(logs)) if len(logs) > 1 else float("nan")
    return math.exp(centre), math.exp(centre) * se_log


def network_ratios(study) -> dict:
    """Per network without a reference: the median over all its weights of σᵢ⁻²/Hᵢᵢ, Hᵢᵢ the exact Hessian
    diagonal at the mean-field mean (``hessian_diag``), with its SE (``median_with_se``) and ``n``.

    The opening's claim 2 gives this for the networks outside its pool of models with a reference (NUTS is
    skipped on them); a model with a reference is in that pool already.
    """
    out = {}
    for model in study.models:
        if model.status != "ok" or not is_network(model) or model.reference is not None:
            continue
        svi, hessian = _fit_ok(model, "svi_meanfield"), _fit_ok(model, "hessian_diag")
        if svi is None or hessian is None:
            continue
        curvature, _ = precision_of(model, ("hessian_diag",))
        ratio = np.asarray(svi.sd, dtype=float) ** -2.0 / curvature
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio) == 0:
            continue
        median, se = median_with_se(ratio)
        out[model.name] = {"median": median, "se": None if not np.isfinite(se) else se, "n": int(len(ratio))}
    return out


# -- the shortfall law: measured σ_SVI / ref sd against √(1 − Rᵢ²) (``study.report.topics.law`` reports it) ---

# A model breaks the law when any parameter's measured / predicted lies outside 1 ± BREAK
# (the typical SE of one such ratio is 3-4%: the prediction's ~3% from 1,000 gold draws and
# the fit's and the reference sd's ~1% each).
BREAK = 0.25
# The low-rank guide's share of the gap closed is taken over the parameters whose mean-field
# gap 1 − σ_SVI / ref sd is at least this.
GAP_MIN = 0.10
# SE of every pooled law statistic: a bootstrap over models (the models are the independent
# units; a model's parameters share its posterior), this many resamples, this seed.
BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0


def _floats(values) -> list:
    return [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def _reasons(model: ModelResult, i: int) -> dict:
    """The study's diagnostics at parameter ``i``: σ_SVI against 1/√Hᵢᵢ at the mode, √(H⁻¹)ᵢᵢ
    against the reference sd, the law at the mode ((1/√Hᵢᵢ) / √(H⁻¹)ᵢᵢ, the Laplace
    approximation's own √(1 − Rᵢ²)), and whether the mean-field fit is flagged."""
    out: dict = {}
    svi, diag, full, ref = (usable_fit(model, m) for m in (SVI, "laplace_diag", "laplace_full", "reference"))
    if diag is not None:
        out["svi_over_laplace_diag"] = float(svi.sd[i] / diag.sd[i])
    if full is not None:
        out["laplace_full_over_reference"] = float(full.sd[i] / ref.sd[i])
    if diag is not None and full is not None:
        out["law_at_mode"] = float(diag.sd[i] / full.sd[i])
    if svi.status == FLAGGED:
        out["svi_flagged"] = svi.reason
    return out


def model_law(model: ModelResult) -> dict | None:
    """One model's measured σ_SVI / ref sd against the prediction, per parameter; None without both."""
    svi, ref = usable_fit(model, SVI), model.reference
    shrink, shrink_se = predicted_shrink(model)
    if svi is None or ref is None or shrink is None:
        return None
    measured = np.asarray(svi.sd, dtype=float) / np.asarray(ref.sd, dtype=float)
    predicted = np.asarray(shrink, dtype=float)
    ratio = measured / predicted
    worst = int(np.argmax(np.abs(np.log(ratio))))
    out = {
        "parameters": list(model.param_names),
        "measured": _floats(measured),
        "predicted": _floats(predicted),
        "predicted_se": _floats([np.nan if s is None else s for s in shrink_se]),
        "ratio": _floats(ratio),
        "median_measured": float(np.median(measured)),
        "median_predicted": float(np.median(predicted)),
        "median_ratio": float(np.median(ratio)),
        "q10_predicted": float(np.quantile(predicted, LOW_QUANTILE)),
        "q90_predicted": float(np.quantile(predicted, HIGH_QUANTILE)),
        "share_within": float(np.mean(np.abs(ratio - 1.0) <= TOLERANCE)),
        "worst_parameter": model.param_names[worst],
        "worst_measured": float(measured[worst]),
        "worst_predicted": float(predicted[worst]),
        "worst_ratio": float(ratio[worst]),
        "breaks": bool(np.any(np.abs(ratio - 1.0) > BREAK)),
        "diagnostics": _reasons(model, worst),
    }
    lowrank = usable_fit(model, "svi_lowrank")
    if lowrank is not None:
        out["lowrank"] = _floats(np.asarray(lowrank.sd, dtype=float) / np.asarray(ref.sd, dtype=float))
        out["lowrank_rank"] = lowrank.info.get("rank")
    return out


def _bootstrap(groups: list, statistic, seed: int = BOOTSTRAP_SEED) -> float | None:
    """SD of ``statistic(groups resampled with replacement)`` over ``BOOTSTRAP`` resamples (None for one group)."""
    if len(groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [statistic([groups[j] for j in rng.integers(0, len(groups), len(groups))]) for _ in range(BOOTSTRAP)]
    values = [v for v in values if v is not None]
    # Rounded to 12 digits: a constant statistic's sd is a rounding residue, not an error.
    return round(float(np.std(values, ddof=1)), 12) if len(values) > 1 else None


def _median_ratio(groups):
    return float(np.median(np.concatenate([g[0] / g[1] for g in groups])))


def _share_within(groups):
    ratio = np.concatenate([g[0] / g[1] for g in groups])
    return float(np.mean(np.abs(ratio - 1.0) <= TOLERANCE))


def _log_correlation(groups):
    measured = np.log(np.concatenate([g[0] for g in groups]))
    predicted = np.log(np.concatenate([g[1] for g in groups]))
    if np.std(measured) == 0 or np.std(predicted) == 0:
        return None
    return float(np.corrcoef(measured, predicted)[0, 1])


def _gap_closed(groups):
    closed = np.concatenate([(g[2] - g[0]) / (1.0 - g[0]) for g in groups])
    return float(np.median(closed))


def law_answer(study: StudyResult) -> dict:
    """The law over the models with a trusted reference (``benchmark_models``).

    Returns
    -------
    dict
        ``models``: per model ``model_law``; ``missing``: model -> why it has no prediction;
        ``pooled``: over every parameter of those models, the median of measured / predicted
        with its 10–90% range, the share within ±``TOLERANCE``, the correlation of log measured
        with log predicted, each with its bootstrap-over-models SE; ``broken``: the models with
        a parameter outside 1 ± ``BREAK``, worst first; ``lowrank``: the low-rank guide's sd /
        ref sd and the share of the mean-field gap it closes, (sd_lowrank − σ_SVI) / (ref sd −
        σ_SVI) over the parameters with a gap of at least ``GAP_MIN``.
    """
    models, _ = benchmark_models(study)
    entries, missing = {}, {}
    for model in models:
        entry = model_law(model)
        if entry is not None:
            entries[model.name] = entry
        elif usable_fit(model, SVI) is not None:
            ref = model.reference
            missing[model.name] = (ref.info.get("predicted_shrink_missing")
                                   or "the reference predates the law (rerun it)")
    out: dict = {"models": entries, "missing": missing, "break": BREAK, "bootstrap": BOOTSTRAP}
    if not entries:
        return out
    groups = [(np.asarray(e["measured"], dtype=float), np.asarray(e["predicted"], dtype=float))
              for e in entries.values()]
    ratio = np.concatenate([m / p for m, p in groups])
    out["pooled"] = {
        "n": int(ratio.size),
        "n_models": len(groups),
        "median": float(np.median(ratio)),
        "median_se": _bootstrap(groups, _median_ratio),
        "q10": float(np.quantile(ratio, LOW_QUANTILE)),
        "q90": float(np.quantile(ratio, HIGH_QUANTILE)),
        "share_within": float(np.mean(np.abs(ratio - 1.0) <= TOLERANCE)),
        "share_se": _bootstrap(groups, _share_within),
        "log_correlation": _log_correlation(groups),
        "log_correlation_se": _bootstrap(groups, _log_correlation),
    }
    broken = [name for name, e in entries.items() if e["breaks"]]
    out["broken"] = sorted(broken, key=lambda n: (-abs(np.log(entries[n]["worst_ratio"])), n))
    gap_groups = []
    for e in entries.values():
        if "lowrank" not in e:
            continue
        measured, lowrank = np.asarray(e["measured"], dtype=float), np.asarray(e["lowrank"], dtype=float)
        keep = 1.0 - measured >= GAP_MIN
        if keep.any():
            gap_groups.append((measured[keep], np.asarray(e["predicted"], dtype=float)[keep], lowrank[keep]))
    if gap_groups:
        measured = np.concatenate([g[0] for g in gap_groups])
        lowrank = np.concatenate([g[2] for g in gap_groups])
        out["lowrank"] = {
            "n": int(measured.size),
            "n_models": len(gap_groups),
            "median_measured": float(np.median(measured)),
            "median_lowrank": float(np.median(lowrank)),
            "median_gap_closed": _gap_closed(gap_groups),
            "median_gap_closed_se": _bootstrap(gap_groups, _gap_closed),
        }
    return out
