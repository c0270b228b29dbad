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
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from models._posteriordb import has_reference_summary, load_reference_summary
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
        info={"kind": ANALYTIC, "wall_seconds": time.perf_counter() - start},
    )


def _shipped_summary(run: ModelRun) -> bool:
    return bool(run.spec.posteriordb) and has_reference_summary(run.spec.posteriordb)


def fit_gold_summary(run: ModelRun) -> Fit:
    """The reference from the shipped summary of a posteriordb posterior's gold draws."""
    start = time.perf_counter()
    summary = load_reference_summary(run.spec.posteriordb)
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
        return fit_analytic(run)
    if kind == GOLD:
        return fit_gold_draws(run)
    return fit_nuts(run)
