"""The fixed-point check σᵢ⁻² = E_q[Hᵢᵢ] (Opper & Archambeau 2009): its figure, its answer paragraph and its per-model table."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.checks.fixed_point import z_limit
from study.core.results import ModelResult
from study.report.answer import fmt, named_or_counted, with_se
from study.report.document import Heading, Image, Paragraph, Table, slug
from study.report.plotting import DETAIL_DPI, plt, save
from study.report.summary import SVI, usable_fit, usable_models


def inverse_sqrt(expected) -> np.ndarray:
    """``1/sqrt(E_q[H_ii])`` where it is positive, NaN where it is not or was not measured.

    A non-convex model can have ``E_q[H_ii] <= 0`` (no fixed point for that coordinate: its
    residual is below -1), and a large one measures a subset of coordinates (NaN elsewhere);
    both are left out of the figure and shown as "–" in the table.
    """
    expected = np.asarray(expected, dtype=float)
    out = np.full(expected.shape, np.nan)
    positive = expected > 0
    out[positive] = 1.0 / np.sqrt(expected[positive])
    return out


def overlay_fixed_point(ax, model: ModelResult, color: str = "C3", label: str = "σ vs 1/√E_q[Hᵢᵢ] (±1 SE)") -> bool:
    """Draw each parameter's mean-field σ against ``1/sqrt(E_q[H_ii])`` with 1-SE bars.

    Returns False (and draws nothing) without a fixed-point check in the fit.
    """
    fit = usable_fit(model, "svi_meanfield")
    fixed = fit.info.get("fixed_point", {}) if fit is not None else {}
    if "expected_hessian" not in fixed:
        return False
    x = inverse_sqrt(fixed["expected_hessian"])
    x_err = 0.5 * x**3 * np.asarray(fixed["expected_hessian_se"], dtype=float)  # |d E^(-1/2) / dE| = x^3 / 2
    y = np.asarray(fit.sd)
    y_err = np.asarray(fit.info["sd_se"]) if fit.info.get("sd_se") is not None else None
    ax.errorbar(x, y, xerr=x_err, yerr=y_err, fmt="o", ms=3.5, color=color, lw=0.8, label=label)
    return True


def fixed_point_figure(model: ModelResult, fig_dir: Path) -> Image | None:
    """Left: σ against 1/√E_q[Hᵢᵢ] (identity line). Right: the residual rᵢ with bars out to the fit's limit."""
    fit = usable_fit(model, "svi_meanfield")
    fixed = fit.info.get("fixed_point", {}) if fit is not None else {}
    if "r" not in fixed:
        return None
    fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    overlay_fixed_point(ax, model)
    diag = usable_fit(model, "laplace_diag")
    if diag is not None:
        ax.plot(inverse_sqrt(fixed["expected_hessian"]), diag.sd, "x", color="0.4", ms=4, label="1/√Hᵢᵢ at the MAP")
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="y = x")
    if hi / lo > 10:  # log axes only where the sds span decades; else their ticks crowd
        ax.set(xscale="log", yscale="log")
    ax.set(xlabel="1/√E_q[Hᵢᵢ]", ylabel="sd", title="fixed point σᵢ⁻² = E_q[Hᵢᵢ]")
    ax.legend(fontsize=7)
    r = np.asarray(fixed["r"])
    se = np.asarray(fixed["se"])
    index = np.arange(len(r))
    limit = float((fixed.get("diagnosis") or {}).get("z_limit") or z_limit(len(r)))
    off = np.abs(np.asarray(fixed["z"])) > limit
    bars = f"±{limit:.2g} SE"
    ax_r.errorbar(index[~off], r[~off], yerr=limit * se[~off], fmt="o", ms=3.5, color="C0", lw=0.8,
                  label=f"within {limit:.2g} SE")
    if off.any():
        ax_r.errorbar(index[off], r[off], yerr=limit * se[off], fmt="o", ms=3.5, color="C3", lw=0.8,
                      label=f"beyond {limit:.2g} SE")
    ax_r.axhline(0, color="k", lw=0.8)
    ax_r.set(xlabel="parameter index", ylabel=f"rᵢ (bars: {bars})", title="residual rᵢ = σᵢ²·E_q[Hᵢᵢ] − 1")
    ax_r.legend(fontsize=7)
    fig.suptitle(model.title, fontsize=10)
    path = save(fig, dpi=DETAIL_DPI, path=fig_dir / f"fixed-point-{slug(model.name)}.png")
    return Image(path, f"Fixed-point check for {model.name}",
                 "Mean-field σ against the inverse square root of the expected Hessian diagonal under q, and "
                 "the residual rᵢ per parameter with bars out to the fit's limit (SE: the Hessian draws and the seeds).")


def fixed_point_answer(study, answer: dict) -> list:
    rows, verdicts = [], {}
    for model in usable_models(study):
        entry = answer["models"].get(model.name, {}).get("fixed_point")
        if not entry:
            continue
        verdicts[model.name] = entry["verdict"]
        rows.append([
            model.title, str(entry["seeds"]), fmt(entry["sd_rel_se"]), fmt(entry["max_abs_r"]),
            fmt(entry["max_abs_z"]), f"{entry['n_off']} / {entry['n']}", entry["verdict"],
        ])
    if not rows:
        return []
    held = [m for m, v in verdicts.items() if v == "fixed point"]
    short = [m for m, v in verdicts.items() if v == "not converged"]
    wrong = [m for m, v in verdicts.items() if v == "model"]
    text = (
        "At a converged mean-field optimum every rᵢ = σᵢ²·E_q[Hᵢᵢ] − 1 is 0 (Opper & Archambeau 2009), "
        "Hᵢᵢ being the exact Hessian diagonal of −log p in unconstrained space, averaged over q by Monte Carlo "
        f"(antithetic draws). Measured: the fixed point holds (every |rᵢ| within its limit, at least {z_limit(1):.2g} SE) on "
        f"{len(held)} of {len(verdicts)} models"
    )
    if short:
        text += f"; on {named_or_counted([f'`{m}`' for m in short])} σ stopped short of it (optimisation)"
    if wrong:
        text += (f"; on {named_or_counted([f'`{m}`' for m in wrong])} the residual is large with σ settled (the model "
                 "as the ELBO sees it)")
    text += ". Each model's section names the parameters and the likelier cause."
    table = Table(
        columns=["model", "seeds", "relative SE of σ", "max |rᵢ|", "max |rᵢ|/SEᵢ", "beyond the limit", "verdict"],
        rows=rows,
        caption="rᵢ: the mean over seeds of each seed's residual at its own q. SE of r: the Hessian draws and "
                "the seed-to-seed error of σ, by the delta method.",
    )
    return [Heading(3, "Is σ at the mean-field fixed point?", anchor="fixed-point"), Paragraph(text), table]


def fixed_point_blocks(model: ModelResult, fig_dir: Path) -> list:
    fit = model.fits.get(SVI)
    if fit is None or not fit.ok or "fixed_point" not in fit.info:
        return []
    fixed = fit.info["fixed_point"]
    blocks: list = [Heading(3, "Fixed point σᵢ⁻² = E_q[Hᵢᵢ]")]
    if "error" in fixed:
        return blocks + [Paragraph(f"Not checked: {fixed['error']}")]
    i = fit.info
    seeds = (f"σ is the mean of {i['seeds']} seeds (relative SE {fmt(i['sd_rel_se'])}, pooled over parameters; "
             f"largest seed-to-seed spread of a mean: {fmt(i['mean_spread_over_sigma'])} σ)" if i.get("seeds", 1) > 1
             else "one seed: the SE covers the Hessian draws only")
    per_seed = i.get("fixed_point_per_seed") or []
    if per_seed:
        seeds += (f"; each seed is checked at its own q and rᵢ is the mean of the seeds' residuals "
                  f"(verdicts per seed: {', '.join(p['verdict'] for p in per_seed)})")
    if i.get("seeds_apart"):
        seeds += (f". The seeds settled in different places (their means differ by up to "
                  f"{fmt(i['mean_spread_over_sigma'])} σ): the averaged mean is no seed's fit, so only σ, the "
                  "residuals and other per-seed ratios are pooled")
    blocks.append(Paragraph(
        f"{fixed['draws']} antithetic draws from q; {seeds}. Diagnosis: {fixed['diagnosis']['text']}"
    ))
    sd_se = i.get("sd_se") or [None] * len(fit.sd)
    inverse = inverse_sqrt(fixed["expected_hessian"])
    rows = [
        [name, with_se(fit.sd[k], sd_se[k]), fmt(None if np.isnan(inverse[k]) else inverse[k]),
         with_se(fixed["r"][k], fixed["se"][k]), fmt(fixed["z"][k])]
        for k, name in enumerate(model.param_names)
    ]
    blocks.append(Table(columns=["parameter", "σ ± SE", "1/√E_q[Hᵢᵢ]", "r ± SE", "r / SE"], rows=rows,
                        caption="rᵢ = σᵢ²·E_q[Hᵢᵢ] − 1; 0 at the mean-field fixed point."))
    image = fixed_point_figure(model, fig_dir)
    return blocks + ([image] if image is not None else [])
