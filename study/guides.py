"""Richer Gaussian guides: low-rank plus diagonal, and full-rank (methods ``svi_lowrank``, ``svi_fullrank``).

Same objective as ``svi_meanfield`` (the ELBO, ``Trace_ELBO`` with vectorised
particles, JIT-compiled), same start (means at the MAP, every sd at
``init_scale``), same learning-rate schedule and iterate averaging; only the
family differs:

* ``svi_lowrank``: Pyro's ``AutoLowRankMultivariateNormal``,
  ``Sigma = D (W W^T + I) D`` with ``W`` of rank ``round(sqrt(d))``;
* ``svi_fullrank``: Pyro's ``AutoMultivariateNormal``, ``Sigma = L L^T``.

For a Gaussian posterior the full-rank optimum is the posterior itself, so its
marginal sds are exact; how far each family moves from the mean-field sigma
towards the reference measures how much of the gap is the family's fault.

Both guides are ``AutoContinuous``: one flat latent vector, sites in model
order, each flattened in C order, the layout of ``study.joint.FlatJoint``;
``fit_guide`` checks that on every run (the guide's initial mean must equal the
flattened start point). The optimiser is ``ScaledLocAdam`` with the guide's
``loc`` stepping in units of its ``scale`` vector, as mean-field means step in
units of sigma; the Cholesky factor / low-rank factor get plain Adam. The
reported covariance is the average of ``Sigma`` over the last
``average_fraction`` of the run (averaging ``Sigma`` rather than ``W`` keeps the
low-rank factor's rotational freedom from shrinking the average).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoMultivariateNormal
from torch.distributions import biject_to
from tqdm.auto import tqdm

from .context import ModelRun
from .draws import gaussian_draws
from .laplace import map_and_hessian
from .optim import ScaledLocAdam
from .results import Fit
from .svi import CheckedJitELBO, NonFiniteLoss, start_point



class _OneDrawLowRankNormal(dist.LowRankMultivariateNormal):
    """``LowRankMultivariateNormal`` whose ``rsample`` takes one standard-normal tensor.

    The same distribution and the same reparameterisation ``loc + W eps_W + sqrt(D) eps_D``,
    but ``eps_W`` and ``eps_D`` are cut from one draw. With two draws the JIT-compiled ELBO
    consumes the random stream in another order than the plain ELBO, so its self-check
    (``CheckedJitELBO``) cannot confirm it and every step falls back to the 2x slower plain one.
    """

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        rank = self._unbroadcasted_cov_factor.shape[-1]
        eps = torch.randn(shape[:-1] + (rank + shape[-1],), dtype=self.loc.dtype, device=self.loc.device)
        low_rank = (self._unbroadcasted_cov_factor @ eps[..., :rank].unsqueeze(-1)).squeeze(-1)
        return self.loc + low_rank + self._unbroadcasted_cov_diag.sqrt() * eps[..., rank:]


class LowRankGuide(AutoLowRankMultivariateNormal):
    """Pyro's ``AutoLowRankMultivariateNormal``, sampling through ``_OneDrawLowRankNormal``."""

    def get_posterior(self, *args, **kwargs):
        scale = self.scale
        return _OneDrawLowRankNormal(self.loc, self.cov_factor * scale.unsqueeze(-1), scale * scale)


GUIDES = {"svi_lowrank": LowRankGuide, "svi_fullrank": AutoMultivariateNormal}


class LayoutMismatch(RuntimeError):
    """The guide's flat latent vector is not laid out like ``FlatJoint``'s."""


def guide_covariance(guide) -> torch.Tensor:
    """The guide's covariance in the flat unconstrained space, shape ``(d, d)``."""
    scale = guide.scale
    if isinstance(guide, AutoMultivariateNormal):
        factor = scale[:, None] * guide.scale_tril
        return factor @ factor.T
    if isinstance(guide, AutoLowRankMultivariateNormal):
        factor = guide.cov_factor * scale[:, None]
        return factor @ factor.T + torch.diag(scale**2)
    raise TypeError(f"no covariance for {type(guide).__name__}")


def check_layout(guide, run: ModelRun, expected_loc: torch.Tensor | None) -> None:
    """The guide's sites, shapes and flat order must be ``run.joint``'s.

    ``expected_loc``: the flattened start point (the MAP), which the guide's
    initial ``loc`` must equal element for element (C order within sites).
    """
    sites = [(s.name, tuple(s.unconstrained_shape)) for s in run.joint.sites]
    theirs = [(name, tuple(shape)) for name, shape in guide._unconstrained_shapes.items()]
    if sites != theirs:
        raise LayoutMismatch(f"guide sites {theirs} differ from the flat joint's {sites}")
    if expected_loc is not None and not torch.allclose(guide.loc.detach(), expected_loc, rtol=1e-10, atol=1e-12):
        raise LayoutMismatch("the guide's initial mean is not the start point in the flat joint's order")


def gaussian_elbo(run: ModelRun, mean: np.ndarray, covariance: np.ndarray, seed: int) -> tuple[float, float]:
    """ELBO of ``N(mean, covariance)`` by Monte Carlo (``elbo_draws``), with its SE."""
    z = torch.as_tensor(gaussian_draws(mean, covariance, run.settings.elbo_draws, seed)[0])
    with torch.no_grad():
        log_joint = run.joint.log_joint_batched(z).numpy()
    d = len(mean)
    _, logdet = np.linalg.slogdet(covariance)
    entropy = 0.5 * (logdet + d * math.log(2 * math.pi * math.e))
    return float(log_joint.mean() + entropy), float(log_joint.std(ddof=1) / math.sqrt(len(log_joint)))


def fit_guide(run: ModelRun, method: str) -> Fit:
    """Fit ``GUIDES[method]`` by the ELBO; mean and covariance averaged over the last iterates."""
    s = run.settings
    guide_class = GUIDES[method]
    steps = max(10, int(round(s.svi_steps * run.spec.svi_steps_scale)))
    pyro.clear_param_store()
    pyro.set_rng_seed(run.seed(method))
    init_loc_fn, init_from = start_point(run)
    guide = guide_class(run.spec.model, init_loc_fn=init_loc_fn, init_scale=s.init_scale)
    guide(**run.data)
    check_layout(guide, run, map_and_hessian(run)["z"] if init_from == "MAP" else None)

    optimiser = ScaledLocAdam(guide, lr=s.lr_start, lr_decay=(s.lr_end / s.lr_start) ** (1.0 / steps))
    # Pair the flat mean with the guide's positive scale vector, as ScaledLocAdam pairs
    # AutoNormal's locs with its scales: the mean steps in units of the guide's scale.
    store = dict(pyro.get_param_store().named_parameters())
    prefix = guide._pyro_name
    optimiser.scale_of[store[f"{prefix}.loc"]] = store[f"{prefix}.scale"]
    optimiser._to_scale = biject_to(guide_class.scale_constraint)
    loss = CheckedJitELBO(s.particles, run.joint.max_plate_nesting)
    svi = SVI(run.spec.model, guide, optimiser, loss)

    record_every = max(1, steps // 400)
    average_from = int(steps * (1.0 - s.average_fraction))
    middle = (average_from + steps) // 2
    losses = np.empty(steps)
    record_steps, log_sd = [], []
    sums = {"loc": 0.0, "cov": 0.0, "sd_first": 0.0, "sd_second": 0.0}
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"{run.name}: {method}", leave=False, disable=not run.progress, mininterval=1.0)
    for step in bar:
        value = svi.step(**run.data)
        if not math.isfinite(value):
            raise NonFiniteLoss(f"{method} loss became {value} at step {step}")
        losses[step] = value
        with torch.no_grad():
            loc = guide.loc.detach().clone()
            cov = guide_covariance(guide).detach()
        sd = cov.diagonal().sqrt()
        if step % record_every == 0 or step == steps - 1:
            record_steps.append(step)
            log_sd.append(sd.log().numpy().copy())
        if step >= average_from:
            sums["loc"] = sums["loc"] + loc
            sums["cov"] = sums["cov"] + cov
            half = "sd_first" if step < middle else "sd_second"
            sums[half] = sums[half] + sd
    bar.close()
    n = steps - average_from
    mean = (sums["loc"] / n).numpy()
    covariance = (sums["cov"] / n).numpy()
    covariance = 0.5 * (covariance + covariance.T)
    drifts = ((sums["sd_second"] / (steps - middle)) / (sums["sd_first"] / (middle - average_from)) - 1.0).abs()
    elbo, elbo_se = gaussian_elbo(run, mean, covariance, run.seed(f"{method}/elbo"))
    record_steps = np.asarray(record_steps)
    return run.new_fit(
        method,
        mean=mean,
        sd=np.sqrt(np.diag(covariance)),
        draws=gaussian_draws(mean, covariance, s.draws, run.seed(f"{method}/draws")),
        trajectory={"step": record_steps, "loss": losses[record_steps], "log_sigma": np.stack(log_sd)},
        info={
            "wall_seconds": time.perf_counter() - start,
            "steps": steps,
            "particles": s.particles,
            "rank": getattr(guide, "rank", None) or run.joint.dim,
            "init": init_from,
            "jit": bool(loss.use_jit),
            "final_elbo": elbo,
            "final_elbo_se": elbo_se,
            "sigma_drift": float(drifts.max()),
            "averaged_over_last_steps": n,
        },
    )


def fit_svi_lowrank(run: ModelRun) -> Fit:
    """``AutoLowRankMultivariateNormal`` (rank ``round(sqrt(d))``) by the ELBO."""
    return fit_guide(run, "svi_lowrank")


def fit_svi_fullrank(run: ModelRun) -> Fit:
    """``AutoMultivariateNormal`` (dense Cholesky factor) by the ELBO."""
    return fit_guide(run, "svi_fullrank")
