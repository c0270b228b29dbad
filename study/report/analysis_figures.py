"""Figures of the fixed-point check, the KL ablation, the guide families and the data-size sweep.

Each function takes one model's results and a folder, writes one PNG and
returns its ``Image`` block, or None when the fits it needs are missing.
``overlay_fixed_point`` draws the fixed-point points on any matplotlib axes
(for a sigma-versus-curvature figure made elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from study.report.document import Image, slug  # noqa: E402
from study.core.results import ModelResult  # noqa: E402

DPI = 110
ARM_STYLE = {
    "full": ("C0", "-"),
    "entropy_only": ("C2", "--"),
    "prior_only": ("C1", "-."),
    "neither": ("C3", ":"),
}
GUIDE_STYLE = {
    "svi_meanfield": ("C0", "o", "mean-field σ"),
    "svi_meanfield_lr": ("C4", "D", "mean-field + linear response"),
    "svi_lowrank": ("C1", "^", "low-rank + diagonal"),
    "svi_fullrank": ("C2", "s", "full-rank"),
    "laplace_full": ("k", "x", "Laplace √(H⁻¹)ᵢᵢ"),
}
SWEEP_STYLE = {
    "svi_meanfield": ("C0", "o", "σ_SVI"),
    "laplace_diag": ("C1", "^", "laplace_diag 1/√Hᵢᵢ"),
    "laplace_full": ("k", "s", "laplace_full √(H⁻¹)ᵢᵢ"),
}


def _save(fig, path: Path) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    from study.core.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _ok(model: ModelResult, method: str):
    fit = model.fits.get(method)
    return fit if fit is not None and fit.ok else None


def overlay_fixed_point(ax, model: ModelResult, color: str = "C3", label: str = "σ vs 1/√E_q[Hᵢᵢ] (±1 SE)") -> bool:
    """Draw each parameter's mean-field σ against ``1/sqrt(E_q[H_ii])`` with 1-SE bars.

    Returns False (and draws nothing) without a fixed-point check in the fit.
    """
    fit = _ok(model, "svi_meanfield")
    fixed = fit.info.get("fixed_point", {}) if fit is not None else {}
    if "expected_hessian" not in fixed:
        return False
    expected = np.asarray(fixed["expected_hessian"])
    x = 1.0 / np.sqrt(expected)
    x_err = 0.5 * x * np.asarray(fixed["expected_hessian_se"]) / expected
    y = np.asarray(fit.sd)
    y_err = np.asarray(fit.info["sd_se"]) if fit.info.get("sd_se") is not None else None
    ax.errorbar(x, y, xerr=x_err, yerr=y_err, fmt="o", ms=3.5, color=color, lw=0.8, label=label)
    return True


def fixed_point_figure(model: ModelResult, fig_dir: Path) -> Image | None:
    """Left: σ against 1/√E_q[Hᵢᵢ] (identity line). Right: the residual rᵢ with ±3 SE bars."""
    fit = _ok(model, "svi_meanfield")
    fixed = fit.info.get("fixed_point", {}) if fit is not None else {}
    if "r" not in fixed:
        return None
    fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    overlay_fixed_point(ax, model)
    diag = _ok(model, "laplace_diag")
    if diag is not None:
        expected = np.asarray(fixed["expected_hessian"])
        ax.plot(1.0 / np.sqrt(expected), diag.sd, "x", color="0.4", ms=4, label="1/√Hᵢᵢ at the MAP")
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
    off = np.abs(np.asarray(fixed["z"])) > 3
    ax_r.errorbar(index[~off], r[~off], yerr=3 * se[~off], fmt="o", ms=3.5, color="C0", lw=0.8, label="within 3 SE")
    if off.any():
        ax_r.errorbar(index[off], r[off], yerr=3 * se[off], fmt="o", ms=3.5, color="C3", lw=0.8, label="beyond 3 SE")
    ax_r.axhline(0, color="k", lw=0.8)
    ax_r.set(xlabel="parameter index", ylabel="rᵢ (bars: ±3 SE)", title="residual rᵢ = σᵢ²·E_q[Hᵢᵢ] − 1")
    ax_r.legend(fontsize=7)
    fig.suptitle(model.title, fontsize=10)
    path = _save(fig, fig_dir / f"fixed-point-{slug(model.name)}.png")
    return Image(path, f"Fixed-point check for {model.name}",
                 "Mean-field σ against the inverse square root of the expected Hessian diagonal under q, and "
                 "the residual rᵢ per parameter with ±3 SE bars (SE: the Hessian draws and the seeds).")


def ablation_figure(model: ModelResult, fig_dir: Path) -> Image | None:
    """Median log σ (band: all parameters) and the loss against step for the four KL-ablation arms."""
    fit = _ok(model, "kl_ablation")
    if fit is None:
        return None
    fig, (ax_loss, ax) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    t = fit.trajectory
    for arm, (color, style) in ARM_STYLE.items():
        if f"{arm}/log_sigma" not in t:
            continue
        info = fit.info["arms"][arm]
        step, log_sigma = t[f"{arm}/step"], t[f"{arm}/log_sigma"]
        label = f"{info['label']}: {info.get('verdict', '')}"
        ax.plot(step, np.median(log_sigma, axis=1), color=color, ls=style, lw=2.5 if style == "-" else 1.5,
                label=label)
        ax.fill_between(step, log_sigma.min(1), log_sigma.max(1), color=color, alpha=0.12, lw=0)
        ax_loss.plot(step, t[f"{arm}/loss"], color=color, ls=style, lw=1, label=info["label"])
    ax_loss.set(xlabel="step", ylabel="loss (negative objective)", title="objective")
    ax.set(xlabel="step", ylabel="log σ (median; band: all parameters)",
           title=f"constant learning rate {fit.info['constant_lr']:g}")
    ax.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    fig.suptitle(f"{model.title}: which KL term stops the collapse?", fontsize=10)
    path = _save(fig, fig_dir / f"kl-ablation-{slug(model.name)}.png")
    return Image(path, f"KL ablation for {model.name}",
                 "The same guide, optimiser, seed and steps with the prior and the entropy term switched on and "
                 "off: log σ against step.")


def guides_figure(model: ModelResult, fig_dir: Path) -> Image | None:
    """sd / reference sd per parameter for mean-field, linear response, low-rank, full-rank and Laplace."""
    ref = model.reference
    fits = {m: _ok(model, m) for m in GUIDE_STYLE}
    fits = {m: f for m, f in fits.items() if f is not None}
    if ref is None or len(fits) < 2:
        return None
    d = len(model.param_names)
    fig, ax = plt.subplots(figsize=(min(12.0, 3.0 + 0.28 * d), 3.6))
    index = np.arange(d)
    width = 0.7 / len(fits)
    for k, (method, fit) in enumerate(fits.items()):
        color, marker, label = GUIDE_STYLE[method]
        ax.plot(index + (k - (len(fits) - 1) / 2) * width, np.asarray(fit.sd) / ref.sd, marker, color=color,
                ms=4, ls="none", label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set(xlabel="parameter index", ylabel="sd / reference sd", title=f"{model.title}: guide families")
    if d <= 12:
        ax.set_xticks(index, model.param_names, rotation=45, ha="right", fontsize=7)
    ax.legend(fontsize=7, ncol=3)
    path = _save(fig, fig_dir / f"guides-{slug(model.name)}.png")
    return Image(path, f"Guide families for {model.name}",
                 "Each method's marginal sd over the reference's, per parameter (1 = exact).")


def sweep_figure(model: ModelResult, fig_dir: Path) -> Image | None:
    """Geometric mean over parameters of each sd against N, log-log, with an N^(-1/2) guide line."""
    fit = _ok(model, "data_sweep")
    if fit is None:
        return None
    sizes = np.asarray(fit.info["sizes"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for method, (color, marker, label) in SWEEP_STYLE.items():
        sd = np.asarray(fit.info["sd"][method])  # (n_sizes, d)
        geo = np.exp(np.log(sd).mean(1))
        slope = fit.info["slopes"][method]["median"]
        ax.plot(sizes, geo, marker=marker, color=color, lw=1.2, label=f"{label} (median slope {slope:.2f})")
    anchor = np.exp(np.log(np.asarray(fit.info["sd"]["laplace_full"])[-1]).mean())
    ax.plot(sizes, anchor * (sizes / sizes[-1]) ** -0.5, color="0.5", ls="--", lw=1, label="∝ N^(-1/2)")
    ax.set(xscale="log", yscale="log", xlabel="N (observations)", ylabel="geometric mean sd over parameters",
           title=f"{model.title}: data size")
    ax.legend(fontsize=7)
    path = _save(fig, fig_dir / f"data-sweep-{slug(model.name)}.png")
    return Image(path, f"Data-size sweep for {model.name}",
                 "Each method refitted on nested random subsets of the observations; slopes are least-squares "
                 "fits of log sd on log N per parameter (median over parameters).")
