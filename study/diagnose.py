"""Command line and function: what a trained mean-field guide's sigma means.

``python -m study.diagnose --model FILE --params PARAMS.pt [--out DIR]`` reads a guide
trained elsewhere and says, per latent site and per parameter, whether its sigma sits at
the mean-field fixed point ``sigma_i^-2 = E_q[H_ii]`` (Opper & Archambeau 2009), has
collapsed (trained without the KL/entropy term), or is still too large; how sigma compares
with the curvature ``1/sqrt(H_ii)`` at the guide's mean; and the linear-response marginal sd
where ``d`` allows it. In Python, ``study.diagnose(model, guide, data)`` does the same for a
guide held in memory (the module is callable: ``from study import diagnose``).

``PARAMS.pt`` is one of

* a Pyro param store saved with ``pyro.get_param_store().save(path)`` from an
  ``AutoNormal`` or ``AutoDiagonalNormal`` guide over the model file's model;
* a loc/scale file: ``torch.save({site: {"loc": tensor, "scale": tensor}, ...}, path)``,
  one entry per latent site, both tensors of the site's unconstrained shape, ``scale``
  the sd on the unconstrained space (as ``AutoNormal``'s; a hand-written guide that
  trains ``log_sigma`` saves ``log_sigma.exp()``).

Files are read with ``torch.load(..., weights_only=True)``: only tensors, containers and
the constraint classes of ``torch.distributions.constraints`` and
``pyro.distributions.constraints`` are rebuilt, so nothing in the file runs code.

The verdict per site (``site_verdict``) reads the mean over the site's parameters of the
fixed-point residual ``r_i = sigma_i^2 E_q[H_ii] - 1``, with the standard error of that mean
over the antithetic pairs of draws from ``q`` (the pairs, not the parameters, are
independent). Up to ``FIXED_POINT_ALL_COORDINATES`` (256) coordinates ``E_q[H_ii]`` is the
exact Hessian diagonal averaged over ``EXACT_DRAWS`` draws, and linear response
(``study.methods.lrvb``) gives the marginal sds; above, it comes from gradients only
(Price's theorem, ``study.checks.fixed_point.price_residual``, ``PRICE_PAIRS`` pairs), and
no marginal sd can be given.

Exit codes: 0 diagnosed (whatever the verdicts), 1 the diagnosis could not be computed
(e.g. ``log p`` not finite at draws from the guide), 2 bad input (one line naming the first
mismatch; nothing computed, nothing written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from study.checks.fixed_point import (
    FIXED_POINT_ALL_COORDINATES, SMALL_RESIDUAL, expected_curvature, fixed_point_residual, price_residual,
    residual_by_site, z_limit,
)
from study.core.joint import FlatJoint

# Draws from q for the exact Hessian diagonal (d <= FIXED_POINT_ALL_COORDINATES): the study's
# ``curvature_draws``. Antithetic pairs for the gradient-only residual above it: the study's
# ``LARGE_RESIDUAL_PAIRS`` (``study.methods.svi``); 64 gradients in all.
EXACT_DRAWS = 1024
PRICE_PAIRS = 32
# A site's mean residual within max(z_limit(sites) SE, SMALL_RESIDUAL) of 0 is "at the fixed
# point": the Sidak limit over the sites (at least 3 SE), and a floor of 0.1 (sigma within
# ~5% of 1/sqrt(E_q[H_ii])) for a residual measured so precisely (a Gaussian posterior: H is
# constant, the SE is 0) that any step size left behind would count as off.
TOLERANCE = SMALL_RESIDUAL
# The exact H_ii at the guide's mean, one Hessian-vector product per coordinate: every
# coordinate up to this many, above it a random subset of HESSIAN_PER_SITE per latent site
# (``study.core.subset``). On the 112,510-weight digits network one such product took about
# 0.5 s on 2 shared cores (benchmarks/diagnose.py), so 16 per site cost half a minute there.
HESSIAN_ALL_COORDINATES = 1_000
HESSIAN_PER_SITE = 16

AT_FIXED_POINT = "at the fixed point"
TOO_SMALL = "sigma too small"
TOO_LARGE = "sigma too large: not converged"
UNDETERMINED = "undetermined"
VERDICTS = (AT_FIXED_POINT, TOO_SMALL, TOO_LARGE, UNDETERMINED)


class GuideMismatch(ValueError):
    """The guide or its file does not fit the model: one line naming the first mismatch (exit 2)."""


# -- reading a guide -------------------------------------------------------------------------


@dataclass
class GuideParams:
    """A mean-field guide as plain tensors: per site (``sites``) or one flat vector (``flat``)."""

    kind: str  # "AutoNormal", "AutoDiagonalNormal" or "loc/scale"
    sites: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # site -> (loc, scale)
    flat: tuple[Any, Any] | None = None  # (loc, scale), shapes (d,)
    where: dict[str, str] = field(default_factory=dict)  # site -> how the file names it


def _constraint_classes() -> list[type]:
    """Every constraint class of torch and Pyro: what a saved param store pickles besides tensors."""
    import pyro.distributions.constraints as pyro_constraints
    import torch.distributions.constraints as torch_constraints

    found = []
    for module in (torch_constraints, pyro_constraints):
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, torch_constraints.Constraint)
                    and not issubclass(value, property)  # _DependentProperty wraps a function
                    and value is not torch_constraints.Constraint and value not in found):
                found.append(value)
    return found


def load_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with the constraint classes allow-listed.

    Raises
    ------
    GuideMismatch
        The file is missing, not a torch file, or holds anything but tensors, containers
        and constraints (a pickled object that would run code is refused, not run).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise GuideMismatch(f"--params {path}: {'not a file' if path.exists() else 'file not found'}")
    try:
        with torch.serialization.safe_globals(_constraint_classes()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError,
            ImportError, KeyError, IndexError) as error:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
        found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        if found:  # a pickled object: name what it would have called, not how to allow it
            why = f"it refers to {found.group(1)}, which a param store never holds; nothing in the file was run"
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            why = f"{type(error).__name__}: {(lines[0] if lines else '')[:200]}"
        raise GuideMismatch(
            f"--params {path}: not a Pyro param store or a loc/scale file: torch.load(weights_only=True) "
            f"refused it ({why})"
        ) from None


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _constrained(value, constraint):
    """The value a param store's unconstrained tensor stands for (``transform_to(constraint)``)."""
    import torch
    from torch.distributions import transform_to

    with torch.no_grad():
        return transform_to(constraint)(value.detach())


def read_param_store(state: dict, label: str) -> GuideParams:
    """An ``AutoNormal`` or ``AutoDiagonalNormal`` guide from a param store's state."""
    params, constraints = state["params"], state["constraints"]
    if not isinstance(params, dict) or not isinstance(constraints, dict):
        raise GuideMismatch(f"{label}: malformed param store: 'params' and 'constraints' must be dicts")
    names = [str(k) for k in params]
    for key in names:
        if not _is_tensor(params[key]):
            raise GuideMismatch(f"{label}: param store entry {key!r} is a {type(params[key]).__name__}, not a tensor")
    dense = [k for k in names if k.endswith((".scale_tril", ".cov_factor", ".cov_diag"))]
    if dense:
        guide = dense[0].rsplit(".", 1)[0]
        raise GuideMismatch(
            f"{label}: another guide type: {guide} has {dense[0]!r}, a correlated (full or low-rank) "
            "Gaussian; study.diagnose reads mean-field guides: AutoNormal or AutoDiagonalNormal"
        )

    from torch.distributions.constraints import Constraint

    def value(key):
        tensor, constraint = params[key], constraints.get(key)
        if not tensor.is_floating_point():
            raise GuideMismatch(f"{label}: param store entry {key!r} holds {tensor.dtype}, not floating-point numbers")
        if constraint is None:
            return tensor.detach()
        if not isinstance(constraint, Constraint):
            raise GuideMismatch(f"{label}: the constraint of {key!r} is a {type(constraint).__name__}, not a constraint")
        try:
            return _constrained(tensor, constraint)
        except NotImplementedError:
            raise GuideMismatch(f"{label}: the constraint of {key!r}, {constraint}, maps no real numbers "
                                "onto its values: not a guide's parameter") from None

    auto_normal = {}
    for key in names:
        match = re.match(r"^(.+?)\.(locs|scales)\.(.+)$", key)
        if match:
            auto_normal.setdefault(match.group(1), {}).setdefault(match.group(3), {})[match.group(2)] = key
    if auto_normal:
        if len(auto_normal) > 1:
            raise GuideMismatch(f"{label}: the param store holds several AutoNormal guides "
                                f"({', '.join(sorted(auto_normal))}); save one guide's parameters")
        prefix, by_site = next(iter(auto_normal.items()))
        guide = GuideParams(kind="AutoNormal")
        for site, keys in by_site.items():
            if "locs" not in keys or "scales" not in keys:
                missing = "locs" if "locs" not in keys else "scales"
                raise GuideMismatch(f"{label}: param store has no {prefix}.{missing}.{site} for site {site!r}")
            guide.sites[site] = (value(keys["locs"]), value(keys["scales"]))
            guide.where[site] = f"{prefix}.scales.{site}"
        return guide
    for key in names:
        if key.endswith(".loc") and key[: -len(".loc")] + ".scale" in params:
            prefix = key[: -len(".loc")]
            guide = GuideParams(kind="AutoDiagonalNormal", flat=(value(key), value(prefix + ".scale")))
            guide.where["*"] = prefix + ".scale"
            return guide
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else "none"
    raise GuideMismatch(f"{label}: the param store holds no AutoNormal or AutoDiagonalNormal parameters "
                        f"(<guide>.locs.<site> and <guide>.scales.<site>, or <guide>.loc and <guide>.scale); "
                        f"its parameters: {shown}")


def read_loc_scale(state: dict, label: str) -> GuideParams:
    """A ``{site: {"loc": tensor, "scale": tensor}}`` file."""
    guide = GuideParams(kind="loc/scale")
    for site, entry in state.items():
        if not isinstance(site, str):
            raise GuideMismatch(f"{label}: loc/scale file keys must be site names (str), got {site!r}")
        if not isinstance(entry, dict) or set(entry) != {"loc", "scale"}:
            got = sorted(map(str, entry)) if isinstance(entry, dict) else type(entry).__name__
            raise GuideMismatch(f"{label}: site {site!r} must map to {{'loc': tensor, 'scale': tensor}}, got {got}")
        for part in ("loc", "scale"):
            if not _is_tensor(entry[part]) or not entry[part].is_floating_point():
                raise GuideMismatch(f"{label}: site {site!r}: {part} must be a floating-point tensor, "
                                    f"got {type(entry[part]).__name__}")
        guide.sites[site] = (entry["loc"].detach(), entry["scale"].detach())
        guide.where[site] = f"{site}.scale"
    if not guide.sites:
        raise GuideMismatch(f"{label}: the loc/scale file is empty")
    return guide


def read_params_file(path: str | Path) -> GuideParams:
    """A guide from ``--params``: a Pyro param store or a loc/scale file (module docstring)."""
    label = f"--params {path}"
    state = load_file(path)
    if isinstance(state, dict) and set(state) == {"params", "constraints"}:
        return read_param_store(state, label)
    if isinstance(state, dict) and state and all(isinstance(v, dict) for v in state.values()):
        return read_loc_scale(state, label)
    what = type(state).__name__
    if isinstance(state, dict):
        what = f"a dict with keys {', '.join(map(repr, list(state)[:5]))}" if state else "an empty dict"
    raise GuideMismatch(f"{label}: not a Pyro param store (a dict with 'params' and 'constraints', as "
                        f"pyro.get_param_store().save writes) or a loc/scale file ({{site: {{'loc', 'scale'}}}}): "
                        f"it holds {what}")


def read_guide(guide) -> GuideParams:
    """A guide held in memory: ``AutoNormal``, ``AutoDiagonalNormal`` or a ``{site: {"loc", "scale"}}`` mapping."""
    import torch
    from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal

    if isinstance(guide, Mapping):
        return read_loc_scale(dict(guide), "guide")
    if isinstance(guide, AutoNormal):
        if not hasattr(guide, "prototype_trace") or guide.prototype_trace is None:
            raise GuideMismatch("guide: the AutoNormal has no parameters yet (train it, or call it once)")
        out = GuideParams(kind="AutoNormal")
        with torch.no_grad():
            for name, site in guide.prototype_trace.iter_stochastic_nodes():
                loc, scale = guide._get_loc_and_scale(name)
                out.sites[name] = (loc.detach().clone(), scale.detach().clone())
                out.where[name] = f"scales.{name}"
        return out
    if isinstance(guide, AutoDiagonalNormal):
        if not hasattr(guide, "loc"):
            raise GuideMismatch("guide: the AutoDiagonalNormal has no parameters yet (train it, or call it once)")
        with torch.no_grad():
            out = GuideParams(kind="AutoDiagonalNormal", flat=(guide.loc.detach().clone(), guide.scale.detach().clone()))
        out.where["*"] = "scale"
        return out
    raise GuideMismatch(f"guide: a {type(guide).__name__}; study.diagnose reads mean-field guides: AutoNormal, "
                        "AutoDiagonalNormal, or a {site: {'loc': tensor, 'scale': tensor}} mapping")


def _first_bad(values, positive: bool) -> str | None:
    """``"scale[3] = -0.5"``-style description of the first non-finite (or non-positive) entry, or None."""
    import torch

    bad = ~torch.isfinite(values)
    if positive:
        bad = bad | ~(values > 0)
    if not bool(bad.any()):
        return None
    index = torch.nonzero(bad.reshape(values.shape))[0].tolist()
    where = f"[{', '.join(map(str, index))}]" if index else ""
    count = int(bad.sum())
    return f"{where} = {values[tuple(index)].item():.6g}" + (f" ({count} entries)" if count > 1 else "")


def match(joint: FlatJoint, guide: GuideParams) -> tuple[np.ndarray, np.ndarray]:
    """The guide's ``(loc, scale)`` in the flat order of ``joint``, checked against the model.

    Raises
    ------
    GuideMismatch
        Naming the first mismatch: a site the guide lacks, a site the model lacks, a
        shape, a non-finite loc, or a scale that is not finite and positive.
    """
    import torch

    model_sites = [s.name for s in joint.sites]
    if guide.flat is not None:
        loc, scale = guide.flat
        where = guide.where.get("*", "scale")
        for part, tensor in (("loc", loc), ("scale", scale)):
            if tuple(tensor.shape) != (joint.dim,):
                raise GuideMismatch(
                    f"wrong shape: the {guide.kind} {part} has shape {tuple(tensor.shape)}; the model's latents "
                    f"need ({joint.dim},): " + ", ".join(f"{s.name} {tuple(s.unconstrained_shape)}" for s in joint.sites)
                )
        pieces = {s.name: (loc[s.slice], scale[s.slice]) for s in joint.sites}
        names = {s.name: where for s in joint.sites}
    else:
        for name in model_sites:
            if name not in guide.sites:
                raise GuideMismatch(
                    f"missing site: the guide has no site {name!r} (the model's latent sites: {', '.join(model_sites)}; "
                    f"the guide's: {', '.join(guide.sites) or 'none'})"
                )
        extra = [name for name in guide.sites if name not in model_sites]
        if extra:
            raise GuideMismatch(f"extra site: the guide's site {extra[0]!r} is not a latent site of the model "
                                f"(the model's: {', '.join(model_sites)})")
        pieces, names = {}, guide.where
        for site in joint.sites:
            loc, scale = guide.sites[site.name]
            for part, tensor in (("loc", loc), ("scale", scale)):
                if tuple(tensor.shape) != tuple(site.unconstrained_shape):
                    raise GuideMismatch(
                        f"wrong shape: site {site.name!r}: the guide's {part} has shape {tuple(tensor.shape)}, "
                        f"the model's unconstrained value {tuple(site.unconstrained_shape)}"
                    )
            pieces[site.name] = (loc.reshape(-1), scale.reshape(-1))
    for site in joint.sites:
        loc, scale = pieces[site.name]
        bad = _first_bad(loc, positive=False)
        if bad:
            raise GuideMismatch(f"non-finite loc: site {site.name!r}: loc{bad}")
        bad = _first_bad(scale, positive=True)
        if bad:
            kind = "negative" if bool((scale < 0).any()) else ("non-finite" if not bool(torch.isfinite(scale).all())
                                                               else "zero")
            raise GuideMismatch(f"{kind} scale: site {site.name!r} ({names.get(site.name, 'scale')}): "
                                f"scale{bad}; every scale must be finite and > 0")
    loc = torch.cat([pieces[s.name][0].reshape(-1) for s in joint.sites]).to(torch.float64).numpy()
    scale = torch.cat([pieces[s.name][1].reshape(-1) for s in joint.sites]).to(torch.float64).numpy()
    return loc, scale


# -- the diagnosis ---------------------------------------------------------------------------


def site_verdict(mean_r: float, se: float, limit: float, tolerance: float = TOLERANCE) -> tuple[str, float | None, str]:
    """The verdict for one site from its mean residual and the SE of that mean.

    ``|mean r| <= max(limit SE, tolerance)``: at the fixed point. Below: sigma too small by
    ``k = 1/sqrt(1 + mean r)`` (the factor that would bring the site's root-mean-square
    ``sigma_i sqrt(E_q[H_ii])`` to 1). Above: sigma too large by ``sqrt(1 + mean r)``, not
    converged. ``1 + mean r <= 0`` (``E_q[H_ii]`` not positive on average) has no fixed point:
    undetermined.

    Returns
    -------
    verdict, factor, text
        ``factor`` is None at the fixed point and when undetermined.
    """
    band = max(limit * se, tolerance) if math.isfinite(se) else math.inf
    if not math.isfinite(mean_r) or 1.0 + mean_r <= 0:
        return UNDETERMINED, None, "undetermined: E_q[Hᵢᵢ] is not positive on average over the site, so no fixed point"
    if abs(mean_r) <= band:
        return AT_FIXED_POINT, None, AT_FIXED_POINT
    if mean_r < 0:
        k = 1.0 / math.sqrt(1.0 + mean_r)
        return TOO_SMALL, k, (f"σ too small by a factor {k:.3g}: the signature of training without the KL/entropy "
                              "term, or of stopping early from a small init")
    k = math.sqrt(1.0 + mean_r)
    return TOO_LARGE, k, f"σ too large by a factor {k:.3g}: not converged"


def _site_mean_by_pair(joint: FlatJoint, sd: np.ndarray, hessian_pairs: np.ndarray) -> dict[str, list[float]]:
    """Per site, the mean of ``r_i`` over its coordinates from each antithetic pair alone (as ``price_residual``)."""
    pair_r = sd**2 * hessian_pairs - 1.0  # (P, d)
    return {site.name: pair_r[:, site.slice].mean(1).tolist() for site in joint.sites}


def _rms(values: np.ndarray) -> float:
    """Root mean square: a site's sd from the mean of its variances."""
    return float(np.sqrt(np.mean(np.square(values))))


def _inv_sqrt_mean(values: np.ndarray) -> float:
    """``1/sqrt(mean)`` over the measured (finite) values: a site's sd from the mean of its curvatures."""
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else float("nan")
    return 1.0 / math.sqrt(mean) if mean > 0 else float("nan")


def compute(joint: FlatJoint, loc: np.ndarray, scale: np.ndarray, seed: int = 0, draws: int = EXACT_DRAWS,
            pairs: int = PRICE_PAIRS) -> dict:
    """Everything the diagnosis reports, as plain numbers (``Diagnosis.result``).

    Raises
    ------
    FloatingPointError
        ``log p`` or its derivatives are not finite at draws from the guide.
    """
    import torch

    from study.methods.curvature import hessian_diagonal, site_means
    from study.methods.lrvb import linear_response_from_curvature, no_strict_maximum
    from study.core.subset import SUBSET_SEED, coordinate_subset

    start = time.perf_counter()
    d = joint.dim
    lr_sd = lr_se = None
    if d <= FIXED_POINT_ALL_COORDINATES:
        curvature = expected_curvature(joint, loc, scale, draws, seed)
        residual = fixed_point_residual(curvature)
        residual["site_mean_by_pair"] = _site_mean_by_pair(joint, scale, curvature.hessian_diagonal)
        estimator = (f"exact Hessian diagonal at {curvature.draws} antithetic draws from q "
                     f"({curvature.hessian_diagonal.shape[0]} pairs)")
        reason = no_strict_maximum(curvature)
        if reason is None:
            response = linear_response_from_curvature(curvature)
            lr_sd, lr_se = response["sd"], response["sd_se"]
            lr_note = ("linear response (Giordano, Broderick & Jordan 2018) at the guide's q: exact for a Gaussian "
                       "posterior whatever q is, otherwise meaningful at the fixed point")
        else:
            lr_note = f"no marginal sd can be given: {reason}"
    else:
        residual = price_residual(joint, loc, scale, pairs, seed)
        estimator = f"gradients only (Price's theorem) at {2 * pairs} antithetic draws from q ({pairs} pairs)"
        lr_note = (f"no marginal sd can be given: linear response needs every coordinate's Hessian column at every "
                   f"draw, up to {FIXED_POINT_ALL_COORDINATES} coordinates (this model has {d:,}), and there is "
                   "no covariance estimate for the shortfall law")
    by_site = residual_by_site(joint, residual)
    residual_seconds = time.perf_counter() - start

    start = time.perf_counter()
    if d <= HESSIAN_ALL_COORDINATES:
        measured = np.arange(d)
        subset_note = "every coordinate"
    else:
        measured = coordinate_subset(joint, HESSIAN_PER_SITE, SUBSET_SEED)
        subset_note = (f"{HESSIAN_PER_SITE} random coordinates per latent site (seed {SUBSET_SEED}); "
                       "the others are not measured")
    values = hessian_diagonal(joint, torch.as_tensor(loc, dtype=joint.dtype), None if len(measured) == d else measured)
    values = values.numpy().astype(float)
    h_mean = np.full(d, np.nan)
    h_mean[measured] = values
    h_site = site_means(joint, measured, values)
    hessian_seconds = time.perf_counter() - start

    expected = np.asarray(residual["expected_hessian"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_expected = np.where(expected > 0, 1.0 / np.sqrt(expected), np.nan)
        inv_h = np.where(h_mean > 0, 1.0 / np.sqrt(h_mean), np.nan)
    limit = z_limit(len(joint.sites))
    sites = []
    for site in joint.sites:
        s = by_site[site.name]
        mean_r, se = s["mean_r"], s["mean_r_se"]
        verdict, factor, text = site_verdict(mean_r, se, limit)
        sl = site.slice
        hs = h_site.get(site.variable_name, {})
        sites.append({
            "site": site.name,
            "variable": site.variable_name,
            "weights": site.size,
            "verdict": verdict,
            "factor": factor,
            "text": text,
            "mean_r": mean_r,
            "mean_r_se": se,
            "band": max(limit * se, TOLERANCE),
            "within_limit_share": s["within_3se"],
            "sigma_rms": _rms(scale[sl]),
            "inv_sqrt_mean_expected_hessian": _inv_sqrt_mean(expected[sl]),
            "expected_hessian_nonpositive": int(np.sum(~(expected[sl] > 0))),
            "hessian_at_mean_measured": int(hs.get("measured", 0)),
            "hessian_at_mean_site_mean": hs.get("mean"),
            "hessian_at_mean_site_mean_se": hs.get("se"),
            "inv_sqrt_mean_hessian_at_mean": _inv_sqrt_mean(h_mean[sl]),
            "hessian_at_mean_nonpositive": int(np.sum(h_mean[sl][np.isfinite(h_mean[sl])] <= 0)),
            "lr_sd_rms": None if lr_sd is None else _rms(lr_sd[sl]),
        })
    names = joint.param_names
    site_of = [site.name for site in joint.sites for _ in range(site.size)]
    parameters = {
        "name": names,
        "site": site_of,
        "loc": loc,
        "sigma": scale,
        "expected_hessian": expected,
        "expected_hessian_se": np.asarray(residual["expected_hessian_se"], dtype=float),
        "inv_sqrt_expected_hessian": inv_expected,
        "r": np.asarray(residual["r"], dtype=float),
        "r_se": np.asarray(residual["se"], dtype=float),
        "hessian_at_mean": h_mean,
        "inv_sqrt_hessian_at_mean": inv_h,
        "lr_sd": lr_sd,
        "lr_sd_se": lr_se,
    }
    return {
        "d": d,
        "sites": sites,
        "parameters": parameters,
        "method": {
            "estimator": estimator,
            "seed": seed,
            "draws": int(residual["draws"]),
            "z_limit": limit,
            "tolerance": TOLERANCE,
            "rule": (f"|mean r| ≤ max({limit:.2f} SE, {TOLERANCE:g}) is at the fixed point ({limit:.2f}: the Šidák "
                     f"limit over {len(joint.sites)} site{'s' if len(joint.sites) > 1 else ''} at a family-wise "
                     "false-alarm rate of 1%, at least 3); below, σ is too small by k = 1/√(1 + mean r); above, too "
                     "large by √(1 + mean r)"),
            "hessian_at_mean": subset_note,
            "linear_response": lr_note,
            "residual_seconds": residual_seconds,
            "hessian_at_mean_seconds": hessian_seconds,
        },
        "linear_response": lr_sd is not None,
    }


@dataclass
class Diagnosis:
    """The diagnosis of one guide: ``result`` (``compute``'s dict plus the guide's description)."""

    result: dict

    @property
    def verdicts(self) -> dict[str, str]:
        """Latent site -> verdict (one of ``VERDICTS``)."""
        return {s["site"]: s["verdict"] for s in self.result["sites"]}

    @property
    def factors(self) -> dict[str, float | None]:
        """Latent site -> the factor of a "too small" or "too large" verdict (None otherwise)."""
        return {s["site"]: s["factor"] for s in self.result["sites"]}

    def site(self, name: str) -> dict:
        return next(s for s in self.result["sites"] if s["site"] == name)

    def lines(self) -> list[str]:
        """One line per latent site, as the command line prints them."""
        out = []
        for s in self.result["sites"]:
            n = s["weights"]
            sigma, tau = s["sigma_rms"], s["inv_sqrt_mean_expected_hessian"]
            what = ("σ", "1/√E_q[Hᵢᵢ]") if n == 1 else ("σ (rms)", "1/√mean E_q[Hᵢᵢ]")
            out.append(
                f"{s['variable']} ({n:,} parameter{'s' if n > 1 else ''}): {what[0]} {sigma:.3g}, "
                f"{what[1]} {tau:.3g}; mean r = {s['mean_r']:+.3g} ± {s['mean_r_se']:.2g} -> {s['text']}"
            )
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def write(self, out: str | Path) -> dict[str, Path]:
        """``diagnosis.json``, ``diagnosis.md``, ``diagnosis.html`` and ``diagnosis.png`` in ``out``."""
        from study.report.diagnosis import write_diagnosis

        return write_diagnosis(self.result, Path(out))


def diagnose(model: Callable[..., Any], guide, data: Mapping[str, Any], *, seed: int = 0, draws: int = EXACT_DRAWS,
             pairs: int = PRICE_PAIRS, init_loc_fn=None, out: str | Path | None = None,
             name: str | None = None) -> Diagnosis:
    """What the sigma of a trained mean-field guide means (the module docstring).

    Parameters
    ----------
    model : callable
        The Pyro model, called as ``model(**data)``.
    guide : AutoNormal, AutoDiagonalNormal or mapping
        The trained guide, or ``{site: {"loc": tensor, "scale": tensor}}`` (unconstrained
        loc and sd).
    data : mapping
        The model's keyword arguments, observations included.
    seed : int
        Seed of the draws from ``q``.
    draws, pairs : int
        Draws of the exact Hessian diagonal (``d <= 256``); antithetic pairs of the
        gradient-only residual above.
    out : path, optional
        Write ``diagnosis.json``, ``.md``, ``.html`` and the figure there.
    name : str, optional
        The model's name in the outputs.

    Raises
    ------
    GuideMismatch
        The guide does not fit the model (one line naming the first mismatch).
    """
    params = read_guide(guide)
    joint = FlatJoint(model, data, init_loc_fn)
    return _diagnose(joint, params, seed=seed, draws=draws, pairs=pairs, out=out,
                     name=name or getattr(model, "__name__", "model"), source="a guide in memory")


def _diagnose(joint: FlatJoint, params: GuideParams, *, seed: int, draws: int, pairs: int, out, name: str,
              source: str, command: str | None = None) -> Diagnosis:
    loc, scale = match(joint, params)
    start = time.perf_counter()
    result = compute(joint, loc, scale, seed=seed, draws=draws, pairs=pairs)
    result.update(model=name, guide=params.kind, source=source, command=command,
                  seconds=time.perf_counter() - start)
    diagnosis = Diagnosis(result)
    if out is not None:
        diagnosis.write(out)
    return diagnosis


# -- the command line ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise GuideMismatch(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m study.diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="FILE", help="the model file (defines SPEC = ModelSpec(...))")
    parser.add_argument("--params", required=True, metavar="PARAMS.pt",
                        help="a Pyro param store (pyro.get_param_store().save) of an AutoNormal or "
                             "AutoDiagonalNormal guide, or a torch-saved {site: {'loc': tensor, 'scale': tensor}}")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write diagnosis.json, diagnosis.md, diagnosis.html and diagnosis.png here "
                             "(default: print the per-site lines only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws from the guide (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Diagnose a saved guide; returns the exit code (0 diagnosed, 1 could not compute, 2 bad input, 130 interrupted)."""
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import torch

        from models import ModelFileError, load_model_file
        from study.compare import InputError, check_model_file
        from study.core.errors import one_line
        from study.core.files import unwritable_reason
        from study.core.settings import MAX_SEED

        try:
            args = build_parser().parse_args(argv)
            if not 0 <= args.seed < MAX_SEED:
                raise GuideMismatch(f"--seed must be >= 0 and < 2**32, got {args.seed}")
            if args.out is not None:
                if args.out.exists() and not args.out.is_dir():
                    raise GuideMismatch(f"--out {args.out} exists and is not a folder")
                unwritable = unwritable_reason(args.out)
                if unwritable:
                    raise GuideMismatch(f"--out {args.out} is not writable: {unwritable}")
            spec = load_model_file(args.model)
            check_model_file(spec, args.model)  # float64, as the study; data and scope checked
            params = read_params_file(args.params)
            try:
                joint = FlatJoint(spec.model, spec.data(), spec.init_loc_fn)
            except Exception as error:
                raise GuideMismatch(f"{args.model}: model {spec.name!r} could not be traced: {one_line(error)}") from None
            try:
                match(joint, params)
            except GuideMismatch as error:
                raise GuideMismatch(f"--params {args.params} does not fit model {spec.name!r}: {error}") from None
        except (GuideMismatch, InputError, ModelFileError) as error:
            lines = str(error).strip().splitlines() or [type(error).__name__]
            print(f"error: {lines[0]}", file=sys.stderr)
            return 2
        command = "python -m study.diagnose " + " ".join(shlex.quote(a) for a in argv)
        try:
            diagnosis = _diagnose(joint, params, seed=args.seed, draws=EXACT_DRAWS, pairs=PRICE_PAIRS, out=None,
                                  name=spec.name, source=str(args.params), command=command)
        except Exception as error:
            print(f"error: the diagnosis could not be computed: {one_line(error)}", file=sys.stderr)
            return 1
        for line in diagnosis.lines():
            print(line)
        if args.out is not None:
            paths = diagnosis.write(args.out)
            print(f"wrote {', '.join(p.name for p in paths.values())} in {args.out} "
                  f"({diagnosis.result['seconds']:.1f} s)")
        return 0
    except KeyboardInterrupt:
        print("interrupted: nothing written or changed half-way", file=sys.stderr)
        return 130


class _CallableModule(types.ModuleType):
    """``study.diagnose`` is a module (``python -m study.diagnose``) that can be called as ``diagnose``."""

    def __call__(self, *args, **kwargs) -> Diagnosis:
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


if __name__ == "__main__":
    sys.exit(main())
