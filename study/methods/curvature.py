"""Curvature references that never build a d x d matrix: what sigma is compared with at scale.

All four are evaluated at one point ``z0``: the mean-field mean ``mu`` of
``svi_meanfield`` when that fit ran (the ``q`` whose sigma is being explained;
the fixed point ``sigma_i^-2 = E_q[H_ii]`` of Opper & Archambeau 2009 is about
curvature around it), else the MAP (L-BFGS; ``study.methods.laplace``).
``info["at"]`` says which.

* ``hessian_diag``: the exact diagonal ``H_ii`` of the Hessian of
  ``U(z) = -log p(z, y)`` (prior and log-Jacobian included), by one
  Hessian-vector product per coordinate, batched through the model's
  vectorised-particle path: ``C`` copies of ``z0``, and the HVP of copy ``c``
  with ``e_{i_c}`` (the gradient of a sum over copies is block-diagonal). Up to
  ``HESSIAN_DIAG_ALL_COORDINATES`` (20,000) coordinates every one is computed; above,
  ``HESSIAN_DIAG_PER_SITE`` (128) random coordinates of every latent site
  (``study.core.subset``, uniform without replacement), and each site's mean
  ``H_ii`` is reported with its standard error (simple random sampling without
  replacement, finite-population correction; Cochran, *Sampling Techniques*,
  1977, ch. 2). sd: ``1/sqrt(H_ii)`` (NaN where unmeasured or ``H_ii <= 0``).
* ``ggn_diag``: laplace-torch's diagonal generalised Gauss-Newton matrix
  (``hessian_structure="diag"``, ``backend=BackPackGGN``: exact, where
  laplace-torch's default backend is about 100 times slower), plus the prior
  precision; sd ``1/sqrt(GGN_ii + prior precision)``.
* ``kfac``: laplace-torch's Kronecker-factored GGN (``hessian_structure="kron"``,
  ``backend=CurvlinopsGGN``; Martens & Grosse 2015, Ritter et al. 2018). The
  marginal variances are the diagonal of ``(c A (x) B + delta I)^-1`` per layer,
  from the eigendecompositions of the factors (``kron_marginal_variance``), never
  the dense matrix.
* ``laplace_last_layer``: laplace-torch's last-layer Laplace
  (``subset_of_weights="last_layer"``, ``hessian_structure="full"``): the
  marginal sds of the last layer's weights; the other coordinates are NaN.

The GGN drops the second derivative of the network (Schraudolph 2002; Martens
2020): for a GLM it equals the exact Hessian, for a network it need not.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from study.core.context import ModelRun
from study.core.joint import FlatJoint
from study.core.results import Fit
from study.core.subset import SUBSET_SEED, coordinate_subset, site_weights
from study.methods.laplace import map_and_hessian
from study.methods.laplace_torch import applicability as laplace_torch_applicability, fitted_laplace

# Every coordinate of the exact Hessian diagonal up to this size; above it, a random subset
# per latent site. One HVP costs a few gradients over every row, so the whole diagonal costs
# O(d^2) time: on 2 cores, in float64, all 9,610 coordinates of the digits network
# (1,797 rows) take about 75 s in chunks of 13 copies (extrapolated from 512 coordinates:
# 3.9-4.1 s), and all 1,210 of the smallest rung about 2 s.
HESSIAN_DIAG_ALL_COORDINATES = 20_000
HESSIAN_DIAG_PER_SITE = 128
# Copies of the point evaluated together: bounded so that the batch's graph stays small.
# At d = 9,610, 16 copies per chunk took 3.9 s per 512 coordinates, 32 copies 6.0 s and
# 54 copies (the earlier budget of 2^19) 6.0 s.
MAX_CHUNK = 64
CHUNK_BUDGET = 2**17


def evaluation_point(run: ModelRun) -> tuple[np.ndarray, str]:
    """``z0`` of shape ``(d,)`` and its name: the mean-field mean when ``svi_meanfield`` ran, else the MAP."""
    fit = run.fits.get("svi_meanfield")
    if fit is not None and fit.ok and fit.mean is not None:
        return np.asarray(fit.mean, dtype=float), "svi_meanfield mean"
    return map_and_hessian(run)["z"].numpy().copy(), "MAP"


def hessian_diagonal(joint: FlatJoint, z: torch.Tensor, coordinates: np.ndarray | None = None,
                     chunk: int | None = None) -> torch.Tensor:
    """Exact ``H_ii`` of ``U = -log p`` at ``z`` for the given coordinates, never a ``d x d`` matrix.

    Parameters
    ----------
    joint : FlatJoint
    z : torch.Tensor
        Shape ``(d,)``.
    coordinates : np.ndarray, optional
        Shape ``(k,)``: flat indices; all ``d`` by default.
    chunk : int, optional
        Coordinates per batched Hessian-vector product (copies of ``z`` in one
        vectorised-particle evaluation); default ``min(64, 2^17 / d)``, at least 1.

    Returns
    -------
    torch.Tensor
        Shape ``(k,)``.
    """
    d = joint.dim
    index = torch.arange(d) if coordinates is None else torch.as_tensor(np.asarray(coordinates), dtype=torch.long)
    if chunk is None:
        chunk = max(1, min(MAX_CHUNK, CHUNK_BUDGET // d))
    z = z.detach().to(joint.dtype)
    out = torch.empty(len(index), dtype=joint.dtype)
    for start in range(0, len(index), chunk):
        block = index[start : start + chunk]
        C = len(block)
        copies = z.expand(C, d).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(-joint.log_joint_batched(copies).sum(), copies, create_graph=True)
        # Copy c's gradient depends on copy c alone, so the HVP with e_{block[c]} in row c
        # gives row c of H(z) e_{block[c]}: C diagonal entries from one backward pass.
        rows = torch.arange(C)
        (hv,) = torch.autograd.grad(grad[rows, block].sum(), copies)
        out[start : start + C] = hv[rows, block].detach()
    return out


def site_means(joint: FlatJoint, coordinates: np.ndarray, values: np.ndarray) -> dict:
    """Per latent site: the mean of ``values`` over its measured coordinates and its standard error.

    The coordinates of a site are a simple random sample without replacement of its
    ``n`` coordinates (``study.core.subset``), so the sample mean is unbiased for the
    site's mean with ``SE^2 = (1 - k/n) s^2 / k`` (Cochran 1977, eq. 2.16); 0 when
    every coordinate is measured.
    """
    out = {}
    for site in joint.sites:
        inside = (coordinates >= site.offset) & (coordinates < site.offset + site.size)
        v = values[inside]
        k, n = len(v), site.size
        if k == 0:
            continue
        se = math.sqrt((1 - k / n) * v.var(ddof=1) / k) if 1 < k < n else 0.0
        out[site.variable_name] = {"mean": float(v.mean()), "se": float(se), "measured": k, "size": n}
    return out


def fit_hessian_diag(run: ModelRun) -> Fit:
    """Exact Hessian diagonal of ``-log p`` at the mean-field mean (else the MAP); sd ``1/sqrt(H_ii)``."""
    start = time.perf_counter()
    point, at = evaluation_point(run)
    joint = run.joint
    d = joint.dim
    coordinates = None if d <= HESSIAN_DIAG_ALL_COORDINATES else coordinate_subset(joint, HESSIAN_DIAG_PER_SITE, SUBSET_SEED)
    measured = np.arange(d) if coordinates is None else coordinates
    values = hessian_diagonal(joint, torch.as_tensor(point), coordinates).numpy()
    diag = np.full(d, np.nan)
    diag[measured] = values
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.where(diag > 0, 1.0 / np.sqrt(diag), np.nan)
    weights = site_weights(joint, measured)
    total = float(np.sum(weights * values))
    info = {
        "wall_seconds": time.perf_counter() - start,
        "at": at,
        "hessian_diagonal": diag.tolist(),
        "coordinates": None if coordinates is None else coordinates.tolist(),
        "measured": int(len(measured)),
        "nonpositive": int(np.sum(values <= 0)),
        "per_site": site_means(joint, measured, values),
        "trace_estimate": total,
        "subset_rule": None if coordinates is None else (
            f"{HESSIAN_DIAG_PER_SITE} coordinates per latent site, uniform without replacement (seed {SUBSET_SEED})"
        ),
    }
    return run.new_fit("hessian_diag", mean=point, sd=sd, info=info)


# -- laplace-torch at the evaluation point -------------------------------------------------


def _laplace_at_point(run: ModelRun, subset_of_weights: str, structure: str, backend=None, decompose: bool = True):
    """A fitted laplace-torch ``Laplace`` at ``z0``, the flat index of its module's parameters and facts."""
    start = time.perf_counter()
    point, at = evaluation_point(run)
    problem, index, la = fitted_laplace(run, torch.as_tensor(point), subset_of_weights, structure, backend,
                                        decompose=decompose)
    info = {
        "at": at,
        "backend": type(la.backend).__name__,
        "laplace_class": type(la).__name__,
        "prior_precision": float(problem.prior_precision),
        "sigma_noise": float(problem.sigma_noise) if problem.likelihood == "regression" else None,
        "likelihood": problem.likelihood,
        "fit_seconds": time.perf_counter() - start,
    }
    return la, index, point, info


def _h_factor(la) -> float:
    """laplace-torch's factor between its loss curvature ``H`` and the log likelihood's: ``1/sigma^2`` (regression)."""
    return float(la._H_factor)


def fit_ggn_diag(run: ModelRun) -> Fit:
    """laplace-torch ``DiagLaplace`` with ``BackPackGGN`` at ``z0``: sd ``1/sqrt(GGN_ii + prior precision)``."""
    start = time.perf_counter()
    # BackPackGGN where BackPack knows the layers, the default backend otherwise (fitted_laplace).
    la, index, point, info = _laplace_at_point(run, "all", "diag")
    ggn = np.full(run.joint.dim, np.nan)
    ggn[index] = (_h_factor(la) * la.H).detach().numpy()
    sd = np.full(run.joint.dim, np.nan)
    sd[index] = la.posterior_variance.detach().sqrt().numpy()
    info.update(wall_seconds=time.perf_counter() - start, ggn_diagonal=ggn.tolist())
    return run.new_fit("ggn_diag", mean=point, sd=sd, info=info)


# The eigendecomposition of a Kronecker factor of size n costs O(n^3): 55 s for each of the
# 8,000 x 8,000 factors of the 96,001-weight diabetes network (2 threads). A factor summed over
# N examples of C outputs has rank at most N C (442 there), and its range is then found exactly
# from n x (N C + LOW_RANK_OVERSAMPLE) products (``factor_eigh``) when that is at most
# LOW_RANK_FRACTION of n.
LOW_RANK_OVERSAMPLE = 16
LOW_RANK_FRACTION = 0.5
# A low-rank decomposition is kept only when it reproduces the factor on fresh random
# directions to this relative error (float64 round-off is ~1e-13); otherwise the dense one runs.
LOW_RANK_TOLERANCE = 1e-10


def factor_eigh(factor: torch.Tensor, rank_bound: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Eigenvalues and eigenvectors of a symmetric positive semi-definite factor, possibly thin.

    Dense ``torch.linalg.eigh`` unless ``rank_bound`` (an upper bound on the rank, e.g. the
    number of examples times outputs the factor was summed over) plus ``LOW_RANK_OVERSAMPLE``
    is at most ``LOW_RANK_FRACTION`` of the size ``n``. Then, with ``k`` that many columns:
    ``Y = F Omega`` for a Gaussian ``Omega`` (n x k) spans the range of ``F`` whenever
    ``rank F <= k`` (with probability one), so with ``Q`` an orthonormal basis of ``Y``,
    ``F = Q (Q^T F Q) Q^T`` exactly and the eigenpairs of the ``k x k`` matrix ``Q^T F Q``,
    rotated by ``Q``, are those of ``F`` with a non-zero eigenvalue (Halko, Martinsson &
    Tropp 2011, sec. 1.3 and 4; exact, not approximate, when the rank bound holds). Every
    other eigenvalue is 0, its eigenvectors the orthogonal complement of ``Q``. The result is
    checked on ``8`` fresh random directions and the dense path taken if it misses by more
    than ``LOW_RANK_TOLERANCE`` (a wrong rank bound costs time, never accuracy).

    Returns
    -------
    (values, vectors, how)
        ``values`` ``(m,)``, ``vectors`` ``(n, m)`` orthonormal columns, ``m = n`` (``how ==
        "dense"``) or ``m = k`` (``"low rank"``: the remaining eigenvalues are 0).
    """
    n = factor.shape[0]
    if rank_bound is not None:
        k = int(rank_bound) + LOW_RANK_OVERSAMPLE
        if k <= LOW_RANK_FRACTION * n:
            g = torch.Generator().manual_seed(seed)
            omega = torch.randn(n, k, generator=g, dtype=factor.dtype)
            basis, _ = torch.linalg.qr(factor @ omega)
            projected = basis.T @ (factor @ basis)
            values, small = torch.linalg.eigh(0.5 * (projected + projected.T))
            vectors = basis @ small
            probe = torch.randn(n, 8, generator=g, dtype=factor.dtype)
            exact = factor @ probe
            rebuilt = vectors @ (values[:, None] * (vectors.T @ probe))
            if torch.linalg.norm(exact - rebuilt) <= LOW_RANK_TOLERANCE * torch.linalg.norm(exact):
                return values, vectors, "low rank"
    values, vectors = torch.linalg.eigh(factor)
    return values, vectors, "dense"


def _squared_loadings(values: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vectors**2, values)``, with one more column for a thin basis: its complement, eigenvalue 0.

    The inverse's diagonal needs, per row ``a``, the squared loadings ``Q[a, j]^2`` weighted by
    a function of ``lambda_j``. The eigenvectors of eigenvalue 0 that a thin basis leaves out
    carry the rest of each row's unit norm, ``1 - sum_j Q[a, j]^2``, all at ``lambda = 0``.
    """
    loadings = vectors**2
    # Round-off can leave tiny negative eigenvalues of a positive semi-definite factor.
    values = values.clamp(min=0)
    if vectors.shape[1] < vectors.shape[0]:
        rest = (1.0 - loadings.sum(1, keepdim=True)).clamp(min=0)
        loadings = torch.cat([loadings, rest], 1)
        values = torch.cat([values, values.new_zeros(1)])
    return loadings, values


def kron_marginal_variance(factors: list[torch.Tensor], scale: float, prior_precision: float,
                           rank_bound: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Diagonal of ``(scale * F_1 (x) F_2 + prior_precision * I)^-1`` without forming it.

    With ``F_j = Q_j diag(lambda_j) Q_j^T`` the matrix is ``(Q_1 (x) Q_2)
    diag(scale lambda_1 (x) lambda_2 + delta) (Q_1 (x) Q_2)^T``, so its inverse's
    diagonal at ``(a, b)`` is ``sum_jk Q_1[a, j]^2 Q_2[b, k]^2 / (scale lambda_1j lambda_2k + delta)``:
    two matrix products of the squared eigenvectors, O(n_1^2 n_2 + n_1 n_2^2). A factor of
    rank at most ``rank_bound`` is decomposed thin (``factor_eigh``), its null space one
    column of eigenvalue 0 (``_squared_loadings``): the same diagonal, in O(n^2 rank) time.

    Parameters
    ----------
    factors : list of torch.Tensor
        One ``(n, n)`` factor (a bias) or two, ``(n_1, n_1)`` and ``(n_2, n_2)`` (a weight
        matrix of shape ``(n_1, n_2)``, flattened in C order), symmetric positive semi-definite.
    scale, prior_precision : float
    rank_bound : int, optional
        An upper bound on every factor's rank (``factor_eigh``).

    Returns
    -------
    (variance, how)
        ``variance`` of shape ``(n,)`` or ``(n_1 n_2,)``; per factor ``"dense"`` or ``"low rank"``.
    """
    if len(factors) not in (1, 2):
        raise ValueError(f"a Kronecker block has one or two factors, got {len(factors)}")
    decomposed = [factor_eigh(f, rank_bound) for f in factors]
    parts = [_squared_loadings(values, vectors) for values, vectors, _ in decomposed]
    how = [h for _, _, h in decomposed]
    if len(parts) == 1:
        loadings, values = parts[0]
        return loadings @ (1.0 / (scale * values + prior_precision)), how
    (loadings_1, values_1), (loadings_2, values_2) = parts
    inverse = 1.0 / (scale * torch.outer(values_1, values_2) + prior_precision)
    return ((loadings_1 @ inverse) @ loadings_2.T).reshape(-1), how


def fit_kfac(run: ModelRun) -> Fit:
    """laplace-torch ``KronLaplace`` with ``CurvlinopsGGN`` at ``z0``; marginal sds from the Kronecker factors.

    The factors are laplace-torch's (``la.H``), summed without its own eigendecomposition
    of them (``fitted_laplace(decompose=False)``): the marginal variances need one
    decomposition per factor, done once, thin where the factor's rank allows
    (``kron_marginal_variance``), which on the 96,001-weight diabetes network replaces
    two dense decompositions of each 8,000 x 8,000 factor.
    """
    from laplace.curvature import CurvlinopsGGN

    start = time.perf_counter()
    la, index, point, info = _laplace_at_point(run, "all", "kron", CurvlinopsGGN, decompose=False)
    prior = la.prior_precision
    if prior.numel() != 1:
        raise ValueError("kfac expects one isotropic prior precision")
    # Each factor is a sum over the N examples of outer products of per-output vectors.
    rank_bound = la.n_data * la.n_outputs
    parts, how = zip(*(kron_marginal_variance([f.detach() for f in block], _h_factor(la), float(prior), rank_bound)
                       for block in la.H.kfacs))
    variance = torch.cat(parts)
    if len(variance) != len(index):
        raise ValueError(f"Kronecker factors cover {len(variance)} weights, the module has {len(index)}")
    sd = np.full(run.joint.dim, np.nan)
    sd[index] = variance.sqrt().numpy()
    info.update(
        wall_seconds=time.perf_counter() - start,
        factor_shapes=[[list(f.shape) for f in block] for block in la.H.kfacs],
        factor_decompositions=list(how),
        rank_bound=int(rank_bound),
    )
    return run.new_fit("kfac", mean=point, sd=sd, info=info)


def fit_laplace_last_layer(run: ModelRun) -> Fit:
    """laplace-torch last-layer full Laplace at ``z0``: marginal sds of the last layer (others NaN)."""
    from laplace.curvature import BackPackGGN

    start = time.perf_counter()
    la, index, point, info = _laplace_at_point(run, "last_layer", "full", BackPackGGN)
    last = la.model.last_layer
    # The flat indices of the last layer's parameters: the tail of the module's parameter vector.
    n_last = sum(p.numel() for p in last.parameters())
    last_index = index[len(index) - n_last:]
    sd = np.full(run.joint.dim, np.nan)
    sd[last_index] = torch.diagonal(la.posterior_covariance).detach().sqrt().numpy()
    info.update(wall_seconds=time.perf_counter() - start, last_layer_weights=int(n_last))
    return run.new_fit("laplace_last_layer", mean=point, sd=sd, info=info)


def applicability(run: ModelRun) -> str | None:
    """laplace-torch's methods need the model's ``laplace_torch`` module."""
    return laplace_torch_applicability(run)


def last_layer_applicability(run: ModelRun) -> str | None:
    """A last layer needs a module of at least two layers with weights."""
    reason = laplace_torch_applicability(run)
    if reason:
        return reason
    module = run.spec.laplace_torch(run.data).module
    layers = [m for m in module.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    if len(layers) < 2:
        return "the module has a single layer: its last-layer Laplace is laplace_torch_full"
    return None
