"""The reference: the best ground truth available for a model, in flat unconstrained coordinates.

In order of preference:

1. ``analytic``: the model's exact Gaussian posterior (conjugate models).
2. ``gold draws``: trusted posterior draws. For a posteriordb model the
   project ships a summary of posteriordb's 10,000 Stan draws in flat
   unconstrained coordinates (mean, sd and their ArviZ Monte Carlo errors, plus
   a thinned sample); otherwise the draws the model supplies, mapped there.
3. ``NUTS``: Pyro's NUTS on ``log p(z, y)``, preconditioned by the Laplace
   approximation when one exists (an exact linear change of variables
   ``z = z* + L u`` with ``L L^T = H^-1``, which makes a near-Gaussian target
   look like ``N(0, I)`` and keeps trees shallow). ESS and R-hat from ArviZ.

Every reference also predicts the mean-field shortfall from its covariance ``S`` over all
the model's flat coordinates (``shrink_law``): for a Gaussian posterior the mean-field
optimum is ``sigma_i = 1/sqrt((S^-1)_ii)``, so ``sigma_i / sd_i = 1/sqrt(S_ii (S^-1)_ii)
= sqrt(1 - R_i^2)``, ``R_i^2`` the share of ``theta_i``'s variance explained by the other
coordinates (Bishop, PRML section 10.1.2). It is stored in the
reference's ``info`` as ``predicted_shrink`` with its bootstrap SE ``predicted_shrink_se``,
or ``predicted_shrink_missing`` saying why there is none.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from models._posteriordb import has_reference_summary, load_reference_summary, summary_name
from study.core.context import ModelRun
from study.core.draws import gaussian_draws
from study.core.jit import checked_trace
from study.methods.laplace import MapNotFound, NotPositiveDefinite, laplace_covariance, map_and_hessian
from study.core.results import Fit

ANALYTIC, GOLD, NUTS_KIND, NONE = "analytic", "gold draws", "NUTS", "none"


def reference_kind(run: ModelRun) -> str:
    """Which reference this model gets (``"none"`` when its spec says none can be trusted)."""
    if run.spec.no_reference:
        return NONE
    if run.spec.exact_posterior is not None:
        return ANALYTIC
    if run.spec.reference_draws is not None or _shipped_summary(run):
        return GOLD
    return NUTS_KIND


def sd_mcse(draws: np.ndarray) -> list[float]:
    """Monte Carlo standard error of each parameter's sd, from draws ``(chains, draws, d)``.

    ArviZ's ``mcse(method="sd")`` (effective-sample-size based, Vehtari et al. 2021), stored
    with the fit so the answer's standard errors can be recomputed from ``results.json``.
    """
    import arviz as az  # here, not at import: a warm run reads the reference from the cache

    dataset = az.convert_to_dataset({"z": draws}, dims={"z": ["parameter"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [float(v) for v in np.asarray(az.mcse(dataset, method="sd")["z"].values, dtype=float)]


def _moments(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = draws.reshape(-1, draws.shape[-1])
    return flat.mean(0), flat.std(0, ddof=1)


# The sample covariance of n draws in d coordinates predicts sqrt(1 - R^2) only when n is well
# above d: 1 - R^2 from it is biased low by (n - d)/(n - 1) (corrected below), and its noise
# grows as d/n. Below this many draws per coordinate no prediction is made.
MIN_DRAWS_PER_COORDINATE = 10
# Bootstrap replicates of the prediction's SE.
SHRINK_BOOTSTRAP = 200


def shrink_from_covariance(covariance: np.ndarray) -> np.ndarray:
    """``1/sqrt(S_ii (S^-1)_ii) = sqrt(1 - R_i^2)`` per coordinate, from a covariance ``(d, d)``.

    Raises ``np.linalg.LinAlgError`` when ``S`` is not positive definite.
    """
    covariance = np.asarray(covariance, dtype=np.float64)
    # Through the correlation matrix, so that coordinates on very different scales do not
    # cost precision; its inverse's diagonal is S_ii (S^-1)_ii = 1/(1 - R_i^2).
    variance = np.diag(covariance)
    if not np.all(np.isfinite(covariance)) or not np.all(variance > 0):
        raise np.linalg.LinAlgError("a coordinate without variance")
    scale = np.sqrt(variance)
    correlation = covariance / np.outer(scale, scale)
    factor = np.linalg.cholesky(correlation)
    inverse_factor = np.linalg.solve(factor, np.eye(len(scale)))
    return 1.0 / np.sqrt(np.sum(inverse_factor**2, axis=0))


def shrink_from_draws(flat: np.ndarray) -> np.ndarray:
    """``sqrt(1 - R_i^2)`` from draws ``(n, d)``: the sample covariance (ddof 1), with
    ``1 - R_i^2`` scaled by ``(n - 1)/(n - d)``.

    ``1/(S_ii (S^-1)_ii)`` of the sample covariance is ``SSE_i / SST_i`` of the least-squares
    regression of coordinate ``i`` on the others; ``SSE_i/(n - d)`` and ``SST_i/(n - 1)`` are the
    unbiased estimates of the conditional and the marginal variance, hence the factor.
    """
    n, d = flat.shape
    plain = shrink_from_covariance(np.cov(flat, rowvar=False, ddof=1).reshape(d, d))
    return plain * np.sqrt((n - 1) / (n - d))


def _block_bootstrap(draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One moving-block bootstrap replicate of ``(chains, n, d)`` draws, resampled within each
    chain in blocks of ``round(n^(1/3))`` consecutive draws (Kuensch 1989), so that autocorrelated
    draws keep their dependence; returns ``(chains * n, d)``."""
    chains, n, _ = draws.shape
    block = max(1, int(round(n ** (1 / 3))))
    blocks = -(-n // block)
    out = []
    for chain in range(chains):
        starts = rng.integers(0, n - block + 1, size=blocks)
        index = (starts[:, None] + np.arange(block)[None, :]).reshape(-1)[:n]
        out.append(draws[chain, index])
    return np.concatenate(out)


def shrink_law(draws: np.ndarray | None = None, covariance: np.ndarray | None = None, seed: int = 0) -> dict:
    """The predicted mean-field shortfall ``sqrt(1 - R_i^2)`` for ``info``.

    From an exact ``covariance`` (SE 0), else from ``draws`` ``(chains, n, d)`` with a
    moving-block bootstrap SE (``SHRINK_BOOTSTRAP`` replicates seeded by ``seed``).

    Returns
    -------
    dict
        ``predicted_shrink`` and ``predicted_shrink_se`` (lists, length ``d``) and
        ``predicted_shrink_source`` (how they were computed); or ``predicted_shrink_missing``
        (one line: why there is no prediction).
    """
    try:
        if covariance is not None:
            shrink = shrink_from_covariance(covariance)
            return {"predicted_shrink": shrink.tolist(), "predicted_shrink_se": [0.0] * len(shrink),
                    "predicted_shrink_source": "exact covariance"}
        if draws is None:
            return {"predicted_shrink_missing": "the reference has neither a covariance nor draws"}
        draws = np.asarray(draws, dtype=np.float64)
        chains, n, d = draws.shape
        total = chains * n
        if total < MIN_DRAWS_PER_COORDINATE * d:
            return {"predicted_shrink_missing": (
                f"{total} reference draws for {d} coordinates: fewer than {MIN_DRAWS_PER_COORDINATE} per "
                "coordinate give no usable covariance")}
        shrink = shrink_from_draws(draws.reshape(total, d))
        rng = np.random.default_rng(seed)
        replicates = np.stack([shrink_from_draws(_block_bootstrap(draws, rng)) for _ in range(SHRINK_BOOTSTRAP)])
    except np.linalg.LinAlgError:
        return {"predicted_shrink_missing": "the reference covariance is not positive definite"}
    if not (np.all(np.isfinite(shrink)) and np.all(np.isfinite(replicates))):
        return {"predicted_shrink_missing": "the reference covariance is not positive definite"}
    block = max(1, int(round(n ** (1 / 3))))
    return {
        "predicted_shrink": shrink.tolist(),
        "predicted_shrink_se": np.std(replicates, axis=0, ddof=1).tolist(),
        "predicted_shrink_source": (
            f"sample covariance of {total} draws ({chains} chain{'s' if chains != 1 else ''}); SE: moving-block "
            f"bootstrap within chains, blocks of {block} draws, {SHRINK_BOOTSTRAP} replicates"),
    }


def _diagnostics(draws: np.ndarray, names: list[str]) -> dict:
    """Bulk ESS and rank-normalised split R-hat per parameter (ArviZ), shape ``(chains, draws, d)``."""
    import arviz as az

    dataset = az.convert_to_dataset({"z": draws}, dims={"z": ["parameter"]}, coords={"parameter": names})
    ess = az.ess(dataset)["z"].values
    rhat = az.rhat(dataset)["z"].values
    return {
        "ess_bulk": ess.tolist(),
        "r_hat": rhat.tolist(),
        "min_ess_bulk": float(np.min(ess)),
        "max_r_hat": float(np.max(rhat)),
    }


def fit_analytic(run: ModelRun) -> Fit:
    start = time.perf_counter()
    posterior = run.spec.exact_posterior(run.data)
    mean = posterior.mean.detach().numpy().astype(np.float64)
    covariance = posterior.covariance.detach().numpy().astype(np.float64)
    if mean.shape != (run.joint.dim,) or covariance.shape != (run.joint.dim, run.joint.dim):
        raise ValueError(
            f"exact_posterior returned shapes {mean.shape}, {covariance.shape}; expected ({run.joint.dim},) "
            f"and ({run.joint.dim}, {run.joint.dim})"
        )
    draws = gaussian_draws(mean, covariance, run.settings.draws, run.seed("reference/draws"))
    return run.new_fit(
        "reference", mean=mean, sd=np.sqrt(np.diag(covariance)), draws=draws,
        info={"kind": ANALYTIC, **shrink_law(covariance=covariance), "wall_seconds": time.perf_counter() - start},
    )


def _shipped_summary(run: ModelRun) -> bool:
    return bool(summary_name(run.spec)) and has_reference_summary(summary_name(run.spec))


def fit_gold_summary(run: ModelRun) -> Fit:
    """The reference from the shipped summary of a posteriordb posterior's gold draws."""
    start = time.perf_counter()
    summary = load_reference_summary(summary_name(run.spec))
    if summary.param_names != list(run.joint.param_names):
        raise ValueError(
            f"shipped reference summary of {summary.posterior!r} has elements {summary.param_names}, the model "
            f"{list(run.joint.param_names)}: regenerate it with models/posteriordb/regenerate.py"
        )
    return run.new_fit(
        "reference", mean=summary.mean.copy(), sd=summary.sd.copy(), draws=summary.thinned,
        info={"kind": GOLD, "n_draws": summary.n_draws, "chains": summary.n_chains,
              "sd_se": summary.mcse_sd.tolist(), "mean_se": summary.mcse_mean.tolist(),
              "source": "shipped summary", "wall_seconds": time.perf_counter() - start},
    )


def fit_gold_draws(run: ModelRun) -> Fit:
    """The reference from the gold draws themselves (shipped summary first, if any)."""
    if _shipped_summary(run):
        return fit_gold_summary(run)
    start = time.perf_counter()
    values = run.spec.reference_draws(run.data)
    with torch.no_grad():
        z = run.joint.unconstrain(values).numpy()
    draws = z[None]
    mean, sd = _moments(draws)
    return run.new_fit(
        "reference", mean=mean, sd=sd, draws=draws,
        info={"kind": GOLD, "n_draws": int(z.shape[0]), "sd_se": sd_mcse(draws),
              "wall_seconds": time.perf_counter() - start},
    )


def fit_nuts(run: ModelRun) -> Fit:
    s = run.settings
    start = time.perf_counter()
    joint = run.joint
    try:
        _, covariance = laplace_covariance(run)
        centre = map_and_hessian(run)["z"]
        scale = torch.linalg.cholesky(covariance)
        preconditioned = "Laplace (MAP, H^-1)"
    except (NotPositiveDefinite, MapNotFound, torch.linalg.LinAlgError):
        centre, scale = joint.init_z.clone(), torch.eye(joint.dim, dtype=joint.dtype)
        preconditioned = "none"

    def potential_u(u):
        return -joint.log_joint(centre + scale @ u)

    seeds = [run.seed(f"reference/nuts/chain{chain}") for chain in range(s.nuts_chains)]
    starts = [0.5 * torch.randn(joint.dim, generator=torch.Generator().manual_seed(seed), dtype=joint.dtype)
              for seed in seeds]
    # The potential traced once and checked against itself at every chain's start and at the
    # mode (study.core.jit.checked_trace); traces too large for TorchScript's optimisation
    # passes run without them.
    compiled, traced, optimise = checked_trace(
        potential_u, [torch.zeros(joint.dim, dtype=joint.dtype)] + starts
    )

    def potential(params):
        return compiled(params["u"])

    chains, divergences, step_sizes = [], [], []
    for seed, u0 in zip(seeds, starts):
        pyro.set_rng_seed(seed)
        kernel = NUTS(potential_fn=potential, full_mass=False, max_tree_depth=run.spec.nuts_max_tree_depth)
        mcmc = MCMC(
            kernel, num_samples=s.nuts_draws, warmup_steps=s.nuts_warmup, initial_params={"u": u0},
            disable_progbar=not run.progress,
        )
        with torch.jit.optimized_execution(optimise):
            mcmc.run()
        u = mcmc.get_samples()["u"]
        chains.append((centre + u @ scale.T).detach().numpy())
        divergences.append(len(mcmc.diagnostics()["divergences"]["chain 0"]))
        step_sizes.append(float(kernel.step_size))
    draws = np.stack(chains)
    mean, sd = _moments(draws)
    info = {
        "kind": NUTS_KIND,
        "wall_seconds": time.perf_counter() - start,
        "chains": s.nuts_chains,
        "warmup": s.nuts_warmup,
        "draws_per_chain": s.nuts_draws,
        "divergences": int(sum(divergences)),
        "step_size": step_sizes,
        "preconditioner": preconditioned,
        "max_tree_depth": run.spec.nuts_max_tree_depth,
        "jit": traced,
        "sd_se": sd_mcse(draws),
    }
    info.update(_diagnostics(draws, joint.param_names))
    return run.new_fit("reference", mean=mean, sd=sd, draws=draws, info=info)


def applicability(run: ModelRun) -> str | None:
    """None, or why the model gets no reference (``ModelSpec.no_reference``)."""
    reason = run.spec.no_reference
    return f"no trusted reference: {reason}" if reason else None


def fit_reference(run: ModelRun) -> Fit:
    """The best available reference for the model (see module docstring)."""
    kind = reference_kind(run)
    if kind == ANALYTIC:
        return fit_analytic(run)  # the law from the exact covariance
    fit = fit_gold_draws(run) if kind == GOLD else fit_nuts(run)
    fit.info.update(shrink_law(draws=fit.draws, seed=run.seed("reference/predicted_shrink")))
    return fit
