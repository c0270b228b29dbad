"""The outputs of ``python -m study.diagnose``: ``diagnosis.json``, ``.md``, ``.html`` and the figure.

One document (``study.report.document``) rendered as Markdown and as one self-contained
HTML page, so the two say the same; the JSON holds every number of both, per site and per
parameter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from study.core.files import write_text
from study.report.document import Heading, Image, Paragraph, Table, to_html, to_markdown
from study.report.plotting import DETAIL_DPI, plain_log_ticks, plt, save

# Per-parameter rows shown in diagnosis.md / .html (all of them are in diagnosis.json).
TABLE_ROWS = 200


def _plain(value):
    """JSON-ready: arrays to lists, non-finite floats to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return [x if math.isfinite(x) else None for x in value.tolist()]
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _g(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.{digits}g}" if math.isfinite(value) else "–"


def draw_figure(result: dict, path: Path) -> tuple[Path, int]:
    """σᵢ against 1/√E_q[Hᵢᵢ], log-log, one dot per parameter coloured by site, and the line σ = 1/√E_q[Hᵢᵢ].

    Returns the saved path and the number of parameters left out (``E_q[Hᵢᵢ] <= 0``).
    """
    p = result["parameters"]
    sigma = np.asarray(p["sigma"], dtype=float)
    tau = np.asarray(p["inv_sqrt_expected_hessian"], dtype=float)
    site_of = np.asarray(p["site"])
    shown = np.isfinite(tau) & (tau > 0) & (sigma > 0)
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    colours = plt.get_cmap("tab10")
    many = int(shown.sum()) > 2000  # small dots, drawn as a raster inside the vector figure
    for k, site in enumerate(s["site"] for s in result["sites"]):
        keep = shown & (site_of == site)
        if keep.any():
            ax.scatter(tau[keep], sigma[keep], s=3 if many else 14, alpha=0.7, color=colours(k % 10),
                       label=site, rasterized=many, linewidths=0)
    if shown.any():
        lo = float(min(tau[shown].min(), sigma[shown].min())) / 1.5
        hi = float(max(tau[shown].max(), sigma[shown].max())) * 1.5
        ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=1, linestyle="--", label=r"$\sigma = 1/\sqrt{E_q[H_{ii}]}$")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if shown.any() and math.log10(hi / lo) < 6:
        plain_log_ticks(ax.xaxis)
        plain_log_ticks(ax.yaxis)
    ax.set_xlabel(r"$1/\sqrt{E_q[H_{ii}]}$")
    ax.set_ylabel(r"$\sigma_i$ of the guide")
    ax.set_title(f"{result['model']}: σ against the fixed point", fontsize=10)
    ax.legend(fontsize=8, markerscale=3 if many else 1, loc="best")
    return save(fig, path, dpi=DETAIL_DPI), int((~shown).sum())


def blocks(result: dict, figure: Path, left_out: int) -> list:
    """The diagnosis as document blocks."""
    sites = result["sites"]
    method = result["method"]
    counts = {}
    for s in sites:
        counts[s["verdict"]] = counts.get(s["verdict"], 0) + 1
    summary = "; ".join(f"{n} of {len(sites)} site{'s' if len(sites) > 1 else ''}: {verdict.replace('sigma', 'σ')}"
                        for verdict, n in counts.items())
    out = [
        Heading(1, f"Diagnosis of a mean-field guide: {result['model']}"),
        Paragraph(f"Guide: {result['guide']} from `{result['source']}`, {result['d']:,} latent coordinate"
                  f"{'s' if result['d'] > 1 else ''}. "
                  f"{summary}."),
    ]
    if result.get("command"):
        out.append(Paragraph(f"Made by `{result['command']}` in {result['seconds']:.1f} s."))
    rows = []
    for s in sites:
        rows.append([
            f"`{s['variable']}`", f"{s['weights']:,}", _g(s["sigma_rms"]),
            _g(s["inv_sqrt_mean_expected_hessian"]), f"{s['mean_r']:+.3g} ± {s['mean_r_se']:.2g}",
            s["text"], _g(s["inv_sqrt_mean_hessian_at_mean"]), _g(s["lr_sd_rms"]),
        ])
    out.append(Heading(2, "Per site"))
    out.append(Table(
        ["site", "parameters", "σ (rms)", "1/√mean E_q[Hᵢᵢ]", "mean r ± SE", "verdict", "1/√mean Hᵢᵢ at the mean",
         "marginal sd (linear response, rms)"],
        rows,
        caption=("Over a site's parameters: σ and the marginal sd are root mean squares, 1/√E_q[Hᵢᵢ] and 1/√Hᵢᵢ "
                 "are 1/√ of the mean curvature (1/√Hᵢᵢ over the measured parameters). r = σᵢ²E_q[Hᵢᵢ] − 1; its "
                 "mean over the site, with the SE of that mean over the antithetic pairs of draws. "
                 + method["rule"] + "."),
    ))
    out.append(Image(figure, "sigma against 1/sqrt(E_q[H_ii])",
                     caption=("One dot per parameter, coloured by site; on the dashed line σ is at the mean-field "
                              "fixed point σᵢ⁻² = E_q[Hᵢᵢ] (Opper & Archambeau 2009); below it σ is too small."
                              + (f" {left_out:,} parameters with E_q[Hᵢᵢ] ≤ 0 are not shown." if left_out else ""))))
    out.append(Heading(2, "How"))
    out.append(Table(["quantity", "how"], [
        ["E_q[Hᵢᵢ]", f"{method['estimator']}, seed {method['seed']}"],
        ["Hᵢᵢ at the mean", f"exact (one Hessian-vector product per coordinate): {method['hessian_at_mean']}"],
        ["marginal sd", method["linear_response"]],
    ], numeric=False))
    p = result["parameters"]
    n = len(p["name"])
    lr = p.get("lr_sd")
    prow = []
    for i in range(min(n, TABLE_ROWS)):
        prow.append([
            f"`{p['name'][i]}`", _g(p["sigma"][i]), _g(p["inv_sqrt_expected_hessian"][i]),
            f"{p['r'][i]:+.3g} ± {p['r_se'][i]:.2g}" if math.isfinite(p["r"][i]) else "–",
            _g(p["inv_sqrt_hessian_at_mean"][i]), _g(None if lr is None else lr[i]),
        ])
    out.append(Heading(2, "Per parameter"))
    out.append(Table(
        ["parameter", "σ", "1/√E_q[Hᵢᵢ]", "r ± SE", "1/√Hᵢᵢ at the mean", "marginal sd (linear response)"],
        prow,
        caption=(f"The first {TABLE_ROWS} of {n:,} parameters; diagnosis.json has all of them. "
                 if n > TABLE_ROWS else "") + "– : not measured, or the curvature is not positive.",
    ))
    return out


def to_json(result: dict) -> str:
    """The result as JSON: indented, except the per-parameter lists, one line each (10^5 numbers)."""
    document = _plain(result)
    parameters = document.pop("parameters")
    head = json.dumps(document, indent=1, allow_nan=False)
    lists = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'), allow_nan=False)}"
                       for k, v in parameters.items())
    return f"{head[:-2]},\n \"parameters\": {{\n{lists}\n }}\n}}\n"


def write_diagnosis(result: dict, out: Path) -> dict[str, Path]:
    """Write ``diagnosis.json``, ``diagnosis.md``, ``diagnosis.html`` and ``diagnosis.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "diagnosis.json", "md": out / "diagnosis.md", "html": out / "diagnosis.html"}
    write_text(paths["json"], to_json(result))
    figure, left_out = draw_figure(result, out / "diagnosis.png")
    paths["png"] = figure
    document = blocks(result, figure, left_out)
    write_text(paths["md"], to_markdown(document, out))
    write_text(paths["html"], to_html(document, f"Diagnosis: {result['model']}"))
    return paths
