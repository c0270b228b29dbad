"""σ against curvature: σ_SVI against 1/√Hᵢᵢ, √(H⁻¹)ᵢᵢ and the reference sd, per parameter."""

from __future__ import annotations

from pathlib import Path

import numpy as np


from study.core.results import ModelResult
from study.report.document import Image, slug
from study.report.plotting import (
    INV_SQRT_H, SIGMA_SVI, SQRT_H_INV, plain_log_ticks, plt, save, untrusted_reference,
)
from study.report.summary import BAND, SVI, usable_fit

# The σ-versus-curvature scatter labels at most this many points: those farthest from y = x.
LABELLED_OUTLIERS = 4
COMPARISON_STYLE = {
    "laplace_diag": (f"{INV_SQRT_H} (laplace_diag)", "C0", "o"),
    "laplace_full": (f"{SQRT_H_INV} (laplace_full)", "C1", "s"),
    "reference": ("reference sd", "C2", "^"),
}


def sigma_vs_curvature(model: ModelResult, answer_for_model: dict, fig_dir: Path) -> Image | None:
    """Log–log scatter of σ_SVI against 1/√Hᵢᵢ, √(H⁻¹)ᵢᵢ and the reference sd, with y = x."""
    svi = usable_fit(model, SVI)
    if svi is None:
        return None
    y = np.asarray(svi.sd)
    untrusted = untrusted_reference(answer_for_model)
    fig, ax = plt.subplots(figsize=(6, 5.4))
    worst: dict[str, tuple[float, float, float]] = {}  # parameter -> (|log y/x|, x, y) of its worst comparison
    lo, hi = y.min(), y.max()
    drawn = 0
    for method, (label, colour, marker) in COMPARISON_STYLE.items():
        fit = usable_fit(model, method)
        if fit is None:
            continue
        x = np.asarray(fit.sd)
        hollow = method == "reference" and untrusted
        ax.scatter(x, y, s=28, marker=marker, alpha=0.8, label=label + (" (untrusted NUTS)" if hollow else ""),
                   facecolors="none" if hollow else colour, edgecolors=colour, linewidths=1.2, zorder=3)
        lo, hi = min(lo, x.min()), max(hi, x.max())
        drawn += 1
        for name, xi, yi in zip(model.param_names, x, y):
            distance = abs(np.log(yi / xi))
            if distance > worst.get(name, (-1.0,))[0]:
                worst[name] = (distance, xi, yi)
    if drawn == 0:
        plt.close(fig)
        return None
    fixed = svi.info.get("fixed_point") or {}
    expected = np.asarray(fixed.get("expected_hessian") or [], dtype=float)
    if expected.shape == y.shape and np.all(expected > 0):
        # The fixed-point check (study.checks.fixed_point): sigma_i^-2 = E_q[H_ii] puts these on y = x.
        x = 1.0 / np.sqrt(expected)
        ax.scatter(x, y, s=22, marker="D", color="C3", alpha=0.9, zorder=4,
                   label=r"$1/\sqrt{E_q[H_{ii}]}$ (fixed point)")
        lo, hi = min(lo, x.min()), max(hi, x.max())
    else:
        fixed = {}
    pad = 1.6
    lims = (lo / pad, hi * pad)
    ax.plot(lims, lims, color="k", lw=1, ls="--", label="y = x")
    ax.fill_between(lims, np.array(lims) / BAND, np.array(lims) * BAND, color="0.85", alpha=0.5, lw=0,
                    label=f"within {round(100 * (BAND - 1))}%")
    ax.set(xscale="log", yscale="log", xlim=lims, ylim=lims, aspect="equal",
           xlabel="compared sd", ylabel=f"{SIGMA_SVI} (mean-field)", title=model.title)
    for axis in (ax.xaxis, ax.yaxis):
        plain_log_ticks(axis)
    labelled = sorted(((v, k) for k, v in worst.items() if v[0] > np.log(BAND)), reverse=True)[:LABELLED_OUTLIERS]
    for k, ((_, xi, yi), name) in enumerate(labelled):
        # Outliers often sit together: fan the labels out below their points, joined by a thin line.
        right = np.log(xi / lims[0]) > 0.6 * np.log(lims[1] / lims[0])  # near the right edge: label leftwards
        ax.annotate(name, (xi, yi), xytext=(-14 if right else 14, -12 - 13 * k), textcoords="offset points",
                    ha="right" if right else "left", fontsize=7.5,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4"),
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax.legend(fontsize=8, loc="upper left")
    path = save(fig, fig_dir / f"sigma-curvature-{slug(model.name)}.png")
    caption = ("σ_SVI against other sds, one marker per parameter and comparison. On the line y = x σ equals "
               f"the compared sd; the grey band is the within-{round(100 * (BAND - 1))}% zone.")
    if fixed.get("r"):
        r = np.abs(np.asarray(fixed["r"], dtype=float))
        caption += (f" Red diamonds: 1/√E_q[Hᵢᵢ], the curvature averaged over q, on which the mean-field fixed "
                    f"point puts σ exactly (largest |rᵢ| = |σᵢ²E_q[Hᵢᵢ] − 1| here: {r.max():.3g}).")
    if labelled:
        caption += (f" Labelled: the {len(labelled)} parameter{'s' if len(labelled) > 1 else ''} farthest "
                    "from y = x, at their worst comparison.")
    if untrusted:
        caption += " Hollow: the NUTS reference failed its mixing checks and is not trusted."
    return Image(path, f"σ against curvature for {model.name}", caption)
