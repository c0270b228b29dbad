"""Data-size sweep (method ``data_sweep``): sigma_SVI, laplace_diag and laplace_full against N.

The model is refitted on nested random subsets of its observations, ``N``,
``N/2``, ..., ``N/2**sweep_halvings`` rows (one fixed permutation, so each
subset contains the smaller ones). Once the likelihood dominates the prior,
every sd falls like ``N^(-1/2)``; the fitted log-log slopes say how close each
method is to that regime, and whether the mean-field sigma and the conditional
Laplace sd ``1/sqrt(H_ii)`` keep their ratio to the marginal sd as N grows
(they do when the correlation structure of the posterior does not change with N).

"Observations" are the rows of every data tensor whose first dimension is the
size of the model's largest plate around an observed site; the sweep is meant
for i.i.d.-row models (regressions), which is what ``Settings.sweep_models``
lists.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pyro.poutine as poutine
from pyro.infer.autoguide.initialization import InitMessenger
import torch

from study.core.context import ModelRun
from study.methods.laplace import laplace_covariance, map_and_hessian
from study.core.results import Fit
from study.methods.svi.seeds import fit_seeds

METHODS = ("svi_meanfield", "laplace_diag", "laplace_full")


class NotSweepable(ValueError):
    """The model's data has no row dimension to subsample."""


def applicability(run: ModelRun) -> str | None:
    if run.name in run.settings.sweep_models:
        return None
    chosen = ", ".join(run.settings.sweep_models) or "none"
    return f"runs on the models in Settings.sweep_models only ({chosen})"


def observation_count(run: ModelRun) -> int:
    """Size of the largest plate around an observed site (or of an observed event's ``rows``)."""
    # Latent values from the model's init strategy: a flat prior (Stan's default) cannot be sampled.
    with poutine.block(), torch.no_grad(), InitMessenger(run.init_loc_fn):
        trace = poutine.trace(run.spec.model).get_trace(**run.data)
    observed = [site for site in trace.nodes.values() if site["type"] == "sample" and site["is_observed"]]
    sizes = [frame.size for site in observed for frame in site["cond_indep_stack"]]
    # A likelihood that holds its rows in one event (models/_linear.py: NormalLinear) says how many.
    sizes += [site["fn"].rows for site in observed if isinstance(getattr(site["fn"], "rows", None), int)]
    if not sizes:
        raise NotSweepable("no observed site inside a plate: nothing to subsample")
    return max(sizes)


def subsample(data: dict, n_total: int, rows: np.ndarray) -> dict:
    """``data`` with every tensor whose first dimension is ``n_total`` cut to ``rows``."""
    index = torch.as_tensor(rows)
    return {
        k: v.index_select(0, index) if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n_total else v
        for k, v in data.items()
    }


def sizes_for(n_total: int, halvings: int) -> list[int]:
    """``[n_total / 2**k, ..., n_total]``, ascending, distinct, each at least 2."""
    sizes = {max(2, int(round(n_total / 2**k))) for k in range(halvings + 1)}
    return sorted(sizes)


def loglog_slopes(sizes: list[int], sd: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``log sd`` against ``log N`` per parameter; ``sd`` shape ``(n_sizes, d)``."""
    x = np.log(np.asarray(sizes, dtype=float))
    x = x - x.mean()
    y = np.log(sd)
    return (x @ (y - y.mean(0))) / (x @ x)


def _fit_at(run: ModelRun, seed: int) -> dict[str, np.ndarray]:
    found = map_and_hessian(run)
    _, covariance = laplace_covariance(run)
    result = fit_seeds(run, [seed])[0]  # the engine of the mean-field fit, one seed
    return {
        "svi_meanfield": result.sd,
        "laplace_diag": 1.0 / np.sqrt(np.diag(found["hessian"].numpy())),
        "laplace_full": np.sqrt(np.diag(covariance.numpy())),
        "sigma_drift": result.sigma_drift,
        "mean": result.mean,
    }


def fit_data_sweep(run: ModelRun) -> Fit:
    """Refit at each size; ``mean``/``sd`` of the Fit are the mean-field fit on all the data."""
    start = time.perf_counter()
    s = run.settings
    n_total = observation_count(run)
    sizes = sizes_for(n_total, s.sweep_halvings)
    rows = np.random.default_rng(run.seed("data_sweep/rows")).permutation(n_total)
    per_size = []
    for n in sizes:
        if n == n_total:
            svi = run.fits.get("svi_meanfield")
            if svi is not None and svi.ok:  # the same data: reuse the seed-averaged fit
                found = map_and_hessian(run)
                _, covariance = laplace_covariance(run)
                per_size.append({
                    "svi_meanfield": np.asarray(svi.sd),
                    "laplace_diag": 1.0 / np.sqrt(np.diag(found["hessian"].numpy())),
                    "laplace_full": np.sqrt(np.diag(covariance.numpy())),
                    "sigma_drift": svi.info.get("sigma_drift"),
                    "mean": np.asarray(svi.mean),
                })
                continue
            sub = run
        else:
            sub = ModelRun.create(run.spec, replace(s, svi_seeds=1), subsample(run.data, n_total, rows[:n]))
        per_size.append(_fit_at(sub, run.seed(f"data_sweep/{n}")))
    sd = {m: np.stack([p[m] for p in per_size]) for m in METHODS}  # (n_sizes, d)
    slopes = {}
    for m in METHODS:
        slope = loglog_slopes(sizes, sd[m])
        last = np.log(sd[m][-1] / sd[m][-2]) / np.log(sizes[-1] / sizes[-2]) if len(sizes) > 1 else slope
        slopes[m] = {
            "per_parameter": slope.tolist(),
            "median": float(np.median(slope)),
            "median_last_doubling": float(np.median(last)),
        }
    full = per_size[-1]
    return run.new_fit(
        "data_sweep",
        mean=np.asarray(full["mean"]),
        sd=np.asarray(full["svi_meanfield"]),
        draws=None,
        info={
            "wall_seconds": time.perf_counter() - start,
            "n_total": n_total,
            "sizes": sizes,
            "sd": {m: v.tolist() for m, v in sd.items()},
            "slopes": slopes,
            "sigma_drift": [p["sigma_drift"] for p in per_size],
            "sd_is": "svi_meanfield on all the data (the sweep's largest N)",
        },
    )
