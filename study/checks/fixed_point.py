"""The mean-field fixed point, checked per parameter: ``sigma_i^-2 = E_q[H_ii]``.

For ``q = N(mu, diag sigma^2)`` over the unconstrained latents and
``U(z) = -log p(z, y)``, the ELBO is ``-E_q[U] + sum_i log sigma_i + const``.
By Price's theorem ``d E_q[U] / d sigma_i = sigma_i E_q[H_ii]`` with
``H = grad^2 U``, so every stationary point of the ELBO satisfies

    r_i = sigma_i^2 E_q[H_ii] - 1 = 0

(Opper & Archambeau, "The Variational Gaussian Approximation Revisited",
Neural Computation 2009). The residual ``r_i`` is estimated by Monte Carlo:
``E_q[H_ii]`` from the exact Hessian diagonal at antithetic draws from ``q``
(``d`` Hessian-vector products over the whole batch, never a dense Hessian per
draw), ``sigma`` from the seeds of the mean-field fit. Within a few standard
errors of 0, the learned ``sigma`` *is* the inverse square root of the expected
Hessian diagonal. Far from 0, either the optimisation has not reached the
fixed point (its ``sigma`` trajectory is still moving) or the objective the ELBO
saw is not the log joint whose Hessian is taken here (a broadcasting slip, or a
log density that is not twice differentiable, where ``E_q[H]`` misses the kinks).

The same draws give the blocks of the ELBO's Hessian in ``(mu, log sigma)``
that the linear-response covariance needs (``study.methods.lrvb``), at no extra cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from study.core.joint import FlatJoint

# Up to this many latent coordinates the check measures every coordinate (and keeps the
# blocks linear response needs); above it, a random subset of ``FIXED_POINT_PER_SITE``
# coordinates per latent site (``study.core.subset``) at no more than
# ``FIXED_POINT_SUBSET_DRAWS`` draws, evaluated ``FIXED_POINT_CHUNK`` draws at a time:
# memory O(d) per draw, time (draws x coordinates) Hessian-vector products.
FIXED_POINT_ALL_COORDINATES = 256
FIXED_POINT_PER_SITE = 16
FIXED_POINT_SUBSET_DRAWS = 128
FIXED_POINT_CHUNK = 8

# Residuals within this many standard errors of 0 count as "at the fixed point".
Z_LIMIT = 3.0
# False-alarm rate of the check over a whole default study: its ~50 mean-field fits, each
# testing every parameter's residual, all at their fixed points, are flagged anywhere in
# STUDY_FALSE_ALARM of runs. Per fit that is FAMILY_FALSE_ALARM over its d residuals (Sidak);
# |z| > 3 alone would fire for a converged fit in about 1 - (1 - 0.0027)^d of runs (8% at
# d = 31), and a 1% rate per fit left a default study flagged in about 40% of its runs (two
# full runs flagged a fit of 48 at |z| 3.76 and 3.87). The limit is never below Z_LIMIT.
STUDY_FALSE_ALARM = 0.01
STUDY_FITS = 50
FAMILY_FALSE_ALARM = STUDY_FALSE_ALARM / STUDY_FITS


def z_limit(parameters: int) -> float:
    """The |z| beyond which a residual is off: ``max(Z_LIMIT, Sidak quantile)`` over ``parameters``.

    The two-sided normal quantile with per-parameter rate ``1 - (1 - FAMILY_FALSE_ALARM)^(1/d)``:
    3.9 at d = 2, 4.5 at d = 31, 5.2 at d = 1,000.
    """
    from statistics import NormalDist

    d = max(1, int(parameters))
    per_parameter = 1.0 - (1.0 - FAMILY_FALSE_ALARM) ** (1.0 / d)
    return max(Z_LIMIT, NormalDist().inv_cdf(1.0 - per_parameter / 2.0))
# A sigma that moved towards the fixed point between the two halves of the averaging
# window by at least this fraction of the gap its residual implies (|r| / 2) is still moving.
MOVING_FRACTION = 0.1
# Residuals below this size (sigma within ~5%) are what a step size that decayed a little
# early leaves behind; an objective that differs from the log joint (the likelihood counted
# once per particle, say) is off by factors.
SMALL_RESIDUAL = 0.1


@dataclass
class Curvature:
    """Curvature of ``U = -log p`` at antithetic draws from ``q = N(mean, diag sd^2)``.

    Draw ``m`` of pair ``p`` is ``z = mean + sd * (+/-) eps_p``. Pairs are dealt
    round-robin into ``groups`` groups for a delete-a-group jackknife.

    Attributes
    ----------
    mean, sd : np.ndarray
        Shape ``(d,)``: the ``q`` the draws come from.
    hessian_diagonal : np.ndarray
        Shape ``(P, k)``: ``H_ii`` averaged over each antithetic pair, at the ``k``
        measured coordinates (all ``d`` unless ``coordinates`` says otherwise).
    blocks : np.ndarray or None
        Shape ``(groups, 2d, 2d)``: per group, the sum over its draws of the
        per-draw Hessian of ``-ELBO`` in ``eta = (mu, log sigma)`` (see
        ``study.methods.lrvb``); symmetric. ``None`` on a coordinate subset.
    counts : np.ndarray
        Shape ``(groups,)``: draws per group.
    coordinates : np.ndarray or None
        Shape ``(k,)``: the flat indices measured; ``None`` for all of them.
    """

    mean: np.ndarray
    sd: np.ndarray
    hessian_diagonal: np.ndarray
    blocks: np.ndarray | None
    counts: np.ndarray
    coordinates: np.ndarray | None = None

    @property
    def draws(self) -> int:
        return int(self.counts.sum())


def antithetic_normals(n_pairs: int, d: int, seed: int, antithetic: bool = True) -> np.ndarray:
    """Shape ``(2 n_pairs, d)``: ``eps_1..eps_P`` then ``-eps_1..-eps_P`` (or ``2P`` independent draws)."""
    rng = np.random.default_rng(seed)
    if not antithetic:
        return rng.standard_normal((2 * n_pairs, d))
    eps = rng.standard_normal((n_pairs, d))
    return np.concatenate([eps, -eps])


def expected_curvature(
    joint: FlatJoint, mean: np.ndarray, sd: np.ndarray, draws: int, seed: int, groups: int = 8,
    antithetic: bool = True,
) -> Curvature:
    """Exact Hessians of ``U`` at antithetic draws from ``q``, reduced to what the study needs.

    One backward pass per latent coordinate over the whole batch: the gradient
    of ``sum_m U(z_m)`` is block-diagonal in the draws, so the Hessian-vector
    product with ``e_i`` repeated gives column ``i`` of every draw's Hessian.

    Parameters
    ----------
    joint : FlatJoint
    mean, sd : np.ndarray
        Shape ``(d,)``.
    draws : int
        Rounded up to an even number (antithetic pairs) of at least ``2 groups``.
    seed : int
    groups : int
        Jackknife groups.
    antithetic : bool
        Pair every draw with its mirror image (default); False only to show what
        the pairing buys.

    Returns
    -------
    Curvature
        Above ``FIXED_POINT_ALL_COORDINATES`` coordinates, on a random subset of them
        (``FIXED_POINT_PER_SITE`` per latent site) at no more than
        ``FIXED_POINT_SUBSET_DRAWS`` draws, without the linear-response blocks.
    """
    d = joint.dim
    if d > FIXED_POINT_ALL_COORDINATES:
        from study.core.subset import SUBSET_SEED, coordinate_subset

        coordinates = coordinate_subset(joint, FIXED_POINT_PER_SITE, SUBSET_SEED)
        return expected_curvature_subset(
            joint, mean, sd, min(draws, FIXED_POINT_SUBSET_DRAWS), seed, coordinates, groups, antithetic
        )
    n_pairs = max(groups, (draws + 1) // 2)
    eps = antithetic_normals(n_pairs, d, seed, antithetic)  # (M, d)
    mean_t = torch.as_tensor(mean, dtype=joint.dtype)
    sd_t = torch.as_tensor(sd, dtype=joint.dtype)
    eps_t = torch.as_tensor(eps, dtype=joint.dtype)
    z = (mean_t + sd_t * eps_t).requires_grad_(True)
    (grad,) = torch.autograd.grad(-joint.log_joint_batched(z).sum(), z, create_graph=True)
    if not torch.isfinite(grad).all():
        raise FloatingPointError("the gradient of log p is not finite at some draws from q")
    M = z.shape[0]
    pair = torch.arange(M) % n_pairs
    group = pair % groups  # both draws of a pair in the same group
    one_hot = torch.nn.functional.one_hot(group, groups).to(joint.dtype)  # (M, G)
    scaled = sd_t * eps_t  # (M, d): dz / d log sigma
    diag = torch.empty(M, d, dtype=joint.dtype)
    mu_mu = torch.zeros(groups, d, d, dtype=joint.dtype)
    mu_s = torch.zeros(groups, d, d, dtype=joint.dtype)
    s_s = torch.zeros(groups, d, d, dtype=joint.dtype)
    for i in range(d):
        (column,) = torch.autograd.grad(grad[:, i].sum(), z, retain_graph=True)  # (M, d): H_m[:, i]
        column = column.detach()
        diag[:, i] = column[:, i]
        mu_mu[:, :, i] = one_hot.T @ column
        mu_s[:, :, i] = one_hot.T @ (column * scaled[:, i : i + 1])
        s_s[:, :, i] = one_hot.T @ (column * scaled * scaled[:, i : i + 1])
    # The first-order term of d^2 E[U] / d log sigma_i^2: E[dU/dz_i sigma_i eps_i].
    s_s = s_s + torch.diag_embed(one_hot.T @ (grad.detach() * scaled))
    if not torch.isfinite(diag).all():
        raise FloatingPointError("the Hessian of log p is not finite at some draws from q")
    top = torch.cat([mu_mu, mu_s], dim=2)
    bottom = torch.cat([mu_s.transpose(1, 2), s_s], dim=2)
    blocks = torch.cat([top, bottom], dim=1)
    blocks = 0.5 * (blocks + blocks.transpose(1, 2))
    pairs = 0.5 * (diag[:n_pairs] + diag[n_pairs:])
    return Curvature(
        mean=np.asarray(mean, dtype=float).copy(),
        sd=np.asarray(sd, dtype=float).copy(),
        hessian_diagonal=pairs.numpy(),
        blocks=blocks.numpy(),
        counts=one_hot.sum(0).numpy(),
    )


def expected_curvature_subset(
    joint: FlatJoint, mean: np.ndarray, sd: np.ndarray, draws: int, seed: int, coordinates: np.ndarray,
    groups: int = 8, antithetic: bool = True, chunk: int = FIXED_POINT_CHUNK,
) -> Curvature:
    """The exact Hessian diagonal of ``U`` at antithetic draws from ``q``, on chosen coordinates only.

    ``chunk`` draws at a time: the gradient of their summed ``U`` is block-diagonal in
    the draws, so one Hessian-vector product per coordinate gives that coordinate's
    ``H_ii`` at every draw of the chunk. Never a ``d x d`` matrix; memory is the
    model's graph for ``chunk`` draws.

    Parameters
    ----------
    joint : FlatJoint
    mean, sd : np.ndarray
        Shape ``(d,)``.
    draws, seed, groups, antithetic
        As in ``expected_curvature``.
    coordinates : np.ndarray
        Shape ``(k,)``: flat indices to measure.
    chunk : int
        Draws evaluated together.

    Returns
    -------
    Curvature
        ``hessian_diagonal`` of shape ``(P, k)``, ``blocks`` ``None``.
    """
    d = joint.dim
    coordinates = np.asarray(coordinates, dtype=np.int64)
    n_pairs = max(groups, (draws + 1) // 2)
    eps = antithetic_normals(n_pairs, d, seed, antithetic)  # (M, d)
    mean_t = torch.as_tensor(mean, dtype=joint.dtype)
    sd_t = torch.as_tensor(sd, dtype=joint.dtype)
    M = eps.shape[0]
    diag = torch.empty(M, len(coordinates), dtype=joint.dtype)
    for start in range(0, M, chunk):
        z = (mean_t + sd_t * torch.as_tensor(eps[start : start + chunk], dtype=joint.dtype)).requires_grad_(True)
        (grad,) = torch.autograd.grad(-joint.log_joint_batched(z).sum(), z, create_graph=True)
        if not torch.isfinite(grad).all():
            raise FloatingPointError("the gradient of log p is not finite at some draws from q")
        for j, i in enumerate(coordinates.tolist()):
            (column,) = torch.autograd.grad(grad[:, i].sum(), z, retain_graph=True)
            diag[start : start + z.shape[0], j] = column[:, i].detach()
        del grad, z
    if not torch.isfinite(diag).all():
        raise FloatingPointError("the Hessian of log p is not finite at some draws from q")
    pair = np.arange(M) % n_pairs
    counts = np.bincount(pair % groups, minlength=groups).astype(float)
    pairs = 0.5 * (diag[:n_pairs] + diag[n_pairs:])
    return Curvature(
        mean=np.asarray(mean, dtype=float).copy(),
        sd=np.asarray(sd, dtype=float).copy(),
        hessian_diagonal=pairs.numpy(),
        blocks=None,
        counts=counts,
        coordinates=coordinates,
    )


def fixed_point_residual(curvature: Curvature, sd_rel_se: np.ndarray | float | None = None) -> dict:
    """``r_i = sigma_i^2 E_q[H_ii] - 1`` with its Monte Carlo standard error.

    Parameters
    ----------
    curvature : Curvature
        At ``q = N(mean, diag sd^2)``, ``sd`` being the fitted sigma.
    sd_rel_se : array of shape ``(d,)``, float or None
        Relative standard error of ``sd`` (from the seeds); None when unknown
        (the SE then covers the Hessian draws only).

    Returns
    -------
    dict
        ``r``, ``se``, ``z`` (= r / se), ``expected_hessian``,
        ``expected_hessian_se`` (lists of length ``d``), ``draws``,
        ``se_includes_sigma`` (bool).
    """
    h = curvature.hessian_diagonal  # (P, k)
    n_pairs = h.shape[0]
    d = len(curvature.sd)
    index = np.arange(d) if curvature.coordinates is None else np.asarray(curvature.coordinates)
    measured_expected = h.mean(0)
    measured_se = h.std(0, ddof=1) / math.sqrt(n_pairs)
    # Unmeasured coordinates (a subset above FIXED_POINT_ALL_COORDINATES) stay NaN.
    expected = np.full(d, np.nan)
    expected_se = np.full(d, np.nan)
    expected[index], expected_se[index] = measured_expected, measured_se
    sd = curvature.sd
    r = sd**2 * expected - 1.0
    # Delta method on 1 + r = sigma^2 E[H]: relative errors add in quadrature, sigma's twice.
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = (expected_se / np.abs(expected)) ** 2
    if sd_rel_se is not None:
        relative = relative + (2.0 * np.asarray(sd_rel_se, dtype=float)) ** 2
    se = np.abs(1.0 + r) * np.sqrt(relative)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, r / se, np.where(r == 0, 0.0, np.inf * np.sign(r)))
    z[np.isnan(r)] = np.nan
    return {
        "coordinates": None if curvature.coordinates is None else index.tolist(),
        "r": r.tolist(),
        "se": se.tolist(),
        "z": z.tolist(),
        "expected_hessian": expected.tolist(),
        "expected_hessian_se": expected_se.tolist(),
        "draws": curvature.draws,
        "se_includes_sigma": sd_rel_se is not None,
    }


def diagnose(residual: dict, change: np.ndarray | None, names: list[str], minibatch: bool = False,
             family: int | None = None) -> dict:
    """Is sigma at the fixed point; if not, is the optimisation or the model the likelier cause?

    Parameters
    ----------
    residual : dict
        From ``fixed_point_residual``.
    change : np.ndarray or None
        Shape ``(d,)``: signed relative change of each sigma between the two halves
        of the averaging window (seed average).
    names : list[str]
        Parameter names.
    minibatch : bool
        The fit stepped on mini-batches of the rows (``study.methods.svi.scale_plan``).
        Their ELBO is unbiased, so a settled sigma away from the fixed point does not
        point to the objective there: the gradient noise of the mini-batches hides a
        slow drift from the settle test, and the decayed step size leaves sigma short.
        Such a fit is ``"not converged"``, with that reason.
    family : int, optional
        Residuals tested together for the false-alarm bound (``z_limit``); default the
        measured ones. The seeds of one fit, each checked on its own, are one family of
        ``K`` times as many.

    Returns
    -------
    dict
        ``verdict`` (``"fixed point"``, ``"not converged"`` or ``"model"``), ``off``
        (parameters beyond ``z_limit`` SE), ``moving`` (those of them still moving
        towards the fixed point), ``max_abs_r``, ``max_abs_z`` and ``text`` (one
        sentence for the report).

    Notes
    -----
    ``r_i > 0`` means sigma_i is above ``1/sqrt(E_q[H_ii])``. Sigma still moving
    towards it (a change of the opposite sign, at least ``MOVING_FRACTION`` of
    the gap ``|r_i| / 2``) or a gap of a few percent (``|r_i| < SMALL_RESIDUAL``)
    points to the optimisation; a large gap with a settled sigma points to the
    objective (the model as the ELBO sees it).
    """
    # Unmeasured coordinates (NaN: a subset of a large model) are left out.
    r = np.asarray(residual["r"], dtype=float)
    z = np.asarray(residual["z"], dtype=float)
    measured = int(np.sum(~np.isnan(r)))
    limit = z_limit(measured if family is None else max(family, measured))
    with np.errstate(invalid="ignore"):
        off = np.flatnonzero(np.abs(z) > limit)
    out = {
        "max_abs_r": float(np.nanmax(np.abs(r))),
        "max_abs_z": float(np.nanmax(np.abs(z))),
        "off": [names[i] for i in off],
        "moving": [],
        "z_limit": limit,
    }
    if len(off) == 0:
        out["verdict"] = "fixed point"
        out["text"] = (
            f"every |rᵢ| is within {limit:.2g} SE of 0 (largest |r| {out['max_abs_r']:.3g}): the learned σ "
            "is 1/√E_q[Hᵢᵢ], the mean-field fixed point."
        )
        return out
    moving = [] if change is None else [
        i for i in off if -np.sign(r[i]) * change[i] >= MOVING_FRACTION * abs(r[i]) / 2
    ]
    small = [i for i in off if abs(r[i]) < SMALL_RESIDUAL]
    out["moving"] = [names[i] for i in moving]
    worst = int(off[np.argmax(np.abs(z[off]))])
    head = (
        f"{len(off)} of {measured} {'measured ' if measured < len(r) else ''}parameters are beyond {limit:.2g} SE (worst `{names[worst]}`: "
        f"r = {r[worst]:.3g}, {abs(z[worst]):.1f} SE)"
    )
    optimiser = sorted(set(moving) | set(small))
    if minibatch and len(optimiser) * 2 < len(off):
        out["verdict"] = "not converged"
        out["text"] = (
            f"{head}, with σ settled by the window's test: the fit stepped on mini-batches, whose ELBO "
            "is unbiased, so the objective is not the likelier cause; their gradient noise hides a slow "
            "drift from that test, and the step size decayed before σ reached the fixed point. More "
            "steps (or full batches) would close it."
        )
    elif len(optimiser) * 2 >= len(off):
        out["verdict"] = "not converged"
        why = []
        if moving:
            why.append(f"{len(moving)} still moving towards the fixed point in the averaging window")
        if small:
            why.append(f"{len(small)} off by less than {SMALL_RESIDUAL:g} (σ within ~{50 * SMALL_RESIDUAL:g}%)")
        out["text"] = (
            f"{head}; " + " and ".join(why) + ": most likely the optimisation stopped short of the fixed "
            "point (the step size decayed first); more steps would close it."
        )
    else:
        out["verdict"] = "model"
        out["text"] = (
            f"{head}, by more than {SMALL_RESIDUAL:g} and with σ settled: the likelier cause is the "
            "objective, not the optimiser. The ELBO saw a different log density than the one whose Hessian "
            "is taken here (e.g. the likelihood counted once per particle), or log p is not twice "
            "differentiable (E_q[H] misses its kinks), or the seeds settled in different optima."
        )
    return out


def price_residual(
    joint: FlatJoint, mean: np.ndarray, sd: np.ndarray, pairs: int, seed: int, chunk: int = 8,
    sd_rel_se: float | None = None,
) -> dict:
    """``r_i = sigma_i^2 E_q[H_ii] - 1`` for every coordinate from gradients only: O(d) memory.

    By Price's (Bonnet's) theorem ``E_q[H_ii] = E[g_i(z) eps_i] / sigma_i`` for
    ``z = mu + sigma eps``, ``g = grad U``; with antithetic pairs the estimator is
    ``(g_i(mu + sigma eps) - g_i(mu - sigma eps)) eps_i / (2 sigma_i)``, which cancels the
    odd terms of ``g`` but not the noise of ``eps_i^2``: where ``U`` is quadratic a pair's
    estimate is ``sum_j H_ij sigma_j eps_j eps_i / sigma_i``, ``H_ii eps_i^2`` plus the
    off-diagonal terms. So ``r_i = sigma_i E[...] - 1`` costs ``2 pairs`` gradients, never a
    Hessian, and serves where ``d`` Hessian-vector products per draw are too many (large
    networks). It needs ``U`` twice differentiable.

    Each ``r_i`` is unbiased but skewed (a chi-square with ``pairs`` degrees of freedom over
    ``pairs`` where ``H`` is diagonal), so the *median* of many of them is not their mean:
    with 32 pairs, the median of ``r_i`` over prior-dominated weights exactly at the fixed
    point is ``chi2.median(32) / 32 - 1 = -0.021``. The per-site summary is therefore the
    mean over the site's coordinates, estimated once per pair (``site_mean_by_pair``), so
    that its SE is the spread of those per-pair means: the draws are shared by all
    coordinates, whose errors are correlated (``residual_by_site``).

    Parameters
    ----------
    joint : FlatJoint
    mean, sd : np.ndarray
        Shape ``(d,)``.
    pairs : int
        Antithetic pairs (at least 2).
    seed : int
    chunk : int
        Pairs evaluated per batched gradient (bounds the memory of the activations).
    sd_rel_se : float or None
        Relative SE of sigma (seeds), added in quadrature as in ``fixed_point_residual``.

    Returns
    -------
    dict
        ``r``, ``se``, ``z``, ``expected_hessian``, ``expected_hessian_se`` (lists of
        length ``d``), ``site_mean_by_pair`` (latent site -> the mean of ``r_i`` over its
        coordinates from each pair alone, a list of length ``pairs``), ``draws``,
        ``estimator`` (``"price"``), ``se_includes_sigma``, ``sd_rel_se``.
    """
    if pairs < 2:
        raise ValueError(f"the Price residual needs at least 2 antithetic pairs, got {pairs}")
    d = joint.dim
    mean_t = torch.as_tensor(mean, dtype=joint.dtype)
    sd_t = torch.as_tensor(sd, dtype=joint.dtype)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(d, dtype=joint.dtype)
    total_sq = torch.zeros(d, dtype=joint.dtype)
    by_pair: dict[str, list[float]] = {site.name: [] for site in joint.sites}
    done = 0
    while done < pairs:
        k = min(chunk, pairs - done)
        eps = torch.randn(k, d, generator=generator, dtype=joint.dtype)
        z = torch.cat([mean_t + sd_t * eps, mean_t - sd_t * eps]).requires_grad_(True)
        (grad,) = torch.autograd.grad(-joint.log_joint_batched(z).sum(), z)
        if not torch.isfinite(grad).all():
            raise FloatingPointError("the gradient of log p is not finite at some draws from q")
        estimate = (grad[:k] - grad[k:]) * eps / (2.0 * sd_t)  # (k, d): E_q[H_ii] per pair
        total += estimate.sum(0)
        total_sq += estimate.square().sum(0)
        pair_r = sd_t**2 * estimate - 1.0
        for site in joint.sites:
            by_pair[site.name].extend(pair_r[:, site.slice].mean(1).tolist())
        done += k
    expected = (total / pairs).numpy()
    variance = np.maximum((total_sq / pairs).numpy() - expected**2, 0.0) * pairs / (pairs - 1)
    expected_se = np.sqrt(variance / pairs)
    sd = np.asarray(sd, dtype=float)
    r = sd**2 * expected - 1.0
    relative = (sd**2 * expected_se) ** 2
    if sd_rel_se is not None:
        relative = relative + (2.0 * sd_rel_se * (1.0 + r)) ** 2
    se = np.sqrt(relative)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_score = np.where(se > 0, r / se, np.where(r == 0, 0.0, np.inf * np.sign(r)))
    return {
        "r": r.tolist(), "se": se.tolist(), "z": z_score.tolist(),
        "expected_hessian": expected.tolist(), "expected_hessian_se": expected_se.tolist(),
        "site_mean_by_pair": by_pair,
        "draws": 2 * pairs, "estimator": "price", "se_includes_sigma": sd_rel_se is not None,
        "sd_rel_se": sd_rel_se,
    }


def residual_by_site(joint: FlatJoint, residual: dict) -> dict[str, dict]:
    """Per latent site (a network layer's weights or biases): the median and mean ``r``, SEs, the share within 3 SE.

    Only measured coordinates count (a subset check leaves the others NaN); a site
    with none is left out.

    The SE of the median is the normal-theory ``1.2533 SE_typical / sqrt(n)`` spread
    plus the Monte Carlo error of each ``r_i`` (median of the per-coordinate SEs over
    ``sqrt(n)``), a rough but stated figure. It does not cover the bias of a median of
    skewed estimates: for the gradient-only (Price) residual, whose ``r_i`` are skewed
    (``price_residual``), the site's summary is ``mean_r``, the mean over its coordinates,
    with ``mean_r_se`` the standard error of the mean of its per-pair estimates (shared
    draws: the pairs, not the coordinates, are independent) plus, in quadrature, sigma's
    seed-to-seed error ``2 sd_rel_se (1 + mean_r) / sqrt(n)`` (independent across coordinates).
    """
    r = np.asarray(residual["r"])
    se = np.asarray(residual["se"])
    by_pair = residual.get("site_mean_by_pair") or {}
    rel = residual.get("sd_rel_se")
    out = {}
    for site in joint.sites:
        rs, ses = r[site.slice], se[site.slice]
        measured = np.isfinite(rs) & np.isfinite(ses)  # a coordinate subset leaves the rest NaN
        rs, ses = rs[measured], ses[measured]
        n = len(rs)
        if n == 0:
            continue
        spread = 1.2533 * np.std(rs) / math.sqrt(n) if n > 1 else float("nan")
        out[site.name] = {
            "n": n,
            "median_r": float(np.median(rs)),
            "median_r_se": float(math.hypot(spread, np.median(ses) / math.sqrt(n))) if n > 1 else float(ses[0]),
            "within_3se": float(np.mean(np.abs(rs) <= Z_LIMIT * ses)),
        }
        pairs = np.asarray(by_pair.get(site.name, []), dtype=float)
        if len(pairs) > 1 and n == site.size:
            mean_r = float(pairs.mean())
            mean_se = float(pairs.std(ddof=1) / math.sqrt(len(pairs)))
            if rel is not None:
                mean_se = math.hypot(mean_se, 2.0 * rel * (1.0 + mean_r) / math.sqrt(n))
            out[site.name].update(mean_r=mean_r, mean_r_se=mean_se)
    return out


def with_sigma_error(residual: dict, sd_rel_se: float | None) -> dict:
    """``residual`` (its ``se`` covering the curvature draws only) with sigma's error added.

    ``1 + r_i = sigma_i^2 E_q[H_ii]``: a relative error ``sd_rel_se`` of sigma adds
    ``2 sd_rel_se (1 + r_i)`` in quadrature (delta method), as in ``fixed_point_residual``.
    """
    r = np.asarray(residual["r"], dtype=float)
    se = np.asarray(residual["se"], dtype=float)
    if sd_rel_se is not None:
        se = np.hypot(se, 2.0 * sd_rel_se * (1.0 + r))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, r / se, np.where(r == 0, 0.0, np.inf * np.sign(r)))
    z[np.isnan(r)] = np.nan
    return dict(residual, se=se.tolist(), z=z.tolist(), se_includes_sigma=sd_rel_se is not None,
                sd_rel_se=sd_rel_se)


def pool_seed_residuals(residuals: list[dict], sd_rel_se: float | None) -> dict:
    """One residual from ``K`` seeds' residuals, each taken at that seed's own ``q``.

    Seeds of a network can settle in different places (hidden units swapped or turned
    off): their averaged ``q`` is then no seed's fit, and its residual means nothing. So
    the fixed point is checked per seed, at ``q_k = N(mu_k, diag sigma_k^2)``, and what is
    pooled is the residual itself, comparable across seeds: ``r_i = mean_k r_ik``.

    Parameters
    ----------
    residuals : list of dict
        Per seed, from ``fixed_point_residual`` or ``price_residual`` without ``sd_rel_se``
        (their ``se`` covers the curvature draws only); the same coordinates and, for the
        gradient-only estimator, the same number of pairs in each.
    sd_rel_se : float or None
        Relative SE of the seed-averaged sigma (``seed_standard_errors``).

    Returns
    -------
    dict
        The keys of the inputs, pooled: ``r`` the seed mean; ``se`` the draws' errors
        (independent across seeds: ``sqrt(sum_k se_ik^2) / K``) and sigma's seed error
        ``2 sd_rel_se (1 + r_i)`` in quadrature; ``expected_hessian`` the seed mean;
        ``site_mean_by_pair`` pair ``j`` averaged over the seeds (pairs are independent
        within and across seeds, so their spread gives the SE of the pooled site mean);
        ``draws`` summed; and ``seeds``.
    """
    K = len(residuals)
    if K == 0:
        raise ValueError("no seed residuals to pool")
    r = np.mean([np.asarray(x["r"], dtype=float) for x in residuals], axis=0)
    draw_se = np.sqrt(np.sum([np.asarray(x["se"], dtype=float) ** 2 for x in residuals], axis=0)) / K
    expected = np.mean([np.asarray(x["expected_hessian"], dtype=float) for x in residuals], axis=0)
    expected_se = np.sqrt(np.sum([np.asarray(x["expected_hessian_se"], dtype=float) ** 2 for x in residuals],
                                 axis=0)) / K
    pooled = dict(residuals[0], r=r.tolist(), se=draw_se.tolist(), expected_hessian=expected.tolist(),
                  expected_hessian_se=expected_se.tolist(), draws=int(sum(x["draws"] for x in residuals)), seeds=K)
    if residuals[0].get("site_mean_by_pair") is not None:
        pooled["site_mean_by_pair"] = {
            site: np.mean([x["site_mean_by_pair"][site] for x in residuals], axis=0).tolist()
            for site in residuals[0]["site_mean_by_pair"]
        }
    return with_sigma_error(pooled, sd_rel_se)
