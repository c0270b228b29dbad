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

Start: the covariance starts at the Laplace covariance ``H^-1`` at the MAP
(``init="laplace"``, the default when it exists), the means at the MAP. A cold
start at ``init_scale`` cannot converge where the posterior is very strongly
correlated: Adam moves a parameter by about the learning rate per step, about
64 units over a 6000-step run, while Kilpisjarvi's full-rank Cholesky factor
needs an off-diagonal entry of about 200 (a correlation of -0.99999). The
warm start changes where the optimiser starts, not what it optimises; the fit
reports its ELBO minus the Laplace approximation's on the same draws, which
must not be negative at the ELBO's optimum (Laplace is a member of the family).

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
from torch.distributions import biject_to, transform_to

from study.core.context import ModelRun
from study.core.draws import gaussian_draws
from study.methods.laplace import map_and_hessian
from study.methods.optim import ScaledLocAdam
from study.core.results import Fit
from study.methods.svi import CheckedJitELBO, drift_beyond_noise, particles, run_and_average, start_point



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


def factor_analysis(covariance: torch.Tensor, rank: int, iterations: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """``covariance ~ B B^T + diag(psi)`` with ``B`` of shape ``(d, rank)``: factor analysis by EM.

    The low-rank guide's covariance ``D (W W^T + I) D`` is exactly this form
    (``B = D W``, ``psi = D^2``). EM on the population covariance (Rubin & Thayer 1982)
    fits it; with ``rank >= d - 1`` it represents any covariance. ``psi`` is kept above
    ``1e-8`` of the diagonal so ``D`` stays positive.

    Returns
    -------
    B : torch.Tensor
        Shape ``(d, rank)``.
    psi : torch.Tensor
        Shape ``(d,)``.
    """
    d = covariance.shape[0]
    values, vectors = torch.linalg.eigh(covariance)
    if rank >= d - 1:
        # Exact: covariance - lambda_min I is positive semi-definite of rank d - 1 (EM would
        # crawl towards this boundary solution, psi -> lambda_min, when lambda_min is tiny).
        psi = torch.full((d,), float(values[0]), dtype=covariance.dtype)
        B = vectors[:, 1:] * (values[1:] - values[0]).clamp(min=0.0).sqrt()
        if rank > d - 1:
            B = torch.cat([B, torch.zeros(d, rank - d + 1, dtype=covariance.dtype)], dim=1)
        return B, psi
    B = vectors[:, -rank:] * (0.5 * values[-rank:]).clamp(min=0.0).sqrt()
    floor = 1e-8 * covariance.diagonal()
    psi = (covariance.diagonal() - (B**2).sum(1)).clamp(min=floor)
    eye = torch.eye(rank, dtype=covariance.dtype)
    for _ in range(iterations):
        model = B @ B.T + torch.diag(psi)
        beta = torch.linalg.solve(model, B).T  # (rank, d): B^T model^-1
        B = covariance @ beta.T @ torch.linalg.inv(eye - beta @ B + beta @ covariance @ beta.T)
        psi = (covariance.diagonal() - (B * (covariance @ beta.T)).sum(1)).clamp(min=floor)
    return B, psi


def laplace_start(guide, covariance: torch.Tensor) -> None:
    """Set the guide's covariance parameters to (the best rank-r fit of) ``covariance``, ``(d, d)``.

    Full rank: ``scale = diag(L)``, ``scale_tril = L / scale`` with ``L = chol(covariance)``.
    Low rank: ``scale = sqrt(psi)``, ``W = B / scale`` from ``factor_analysis``.
    """
    with torch.no_grad():
        if isinstance(guide, AutoMultivariateNormal):
            factor = torch.linalg.cholesky(covariance)
            scale = factor.diagonal()
            guide.scale_unconstrained.copy_(transform_to(guide.scale_constraint).inv(scale))
            guide.scale_tril_unconstrained.copy_(
                transform_to(guide.scale_tril_constraint).inv(factor / scale[:, None])
            )
        elif isinstance(guide, AutoLowRankMultivariateNormal):
            B, psi = factor_analysis(covariance, guide.rank)
            scale = psi.sqrt()
            guide.scale_unconstrained.copy_(transform_to(guide.scale_constraint).inv(scale))
            guide.cov_factor.copy_(B / scale[:, None])
        else:
            raise TypeError(f"no Laplace start for {type(guide).__name__}")


def elbo_gain(run: ModelRun, mean: np.ndarray, covariance: np.ndarray, seed: int) -> tuple[float, float]:
    """``ELBO(N(mean, covariance)) - ELBO(Laplace)`` on common draws, with its SE.

    Both Gaussians are driven by the same standard normals (``z = m + L eps``), so most
    of the Monte Carlo noise cancels in the per-draw difference of ``log p``; the
    entropies differ exactly by half the log-determinant ratio.
    """
    found = map_and_hessian(run)
    laplace_cov = torch.cholesky_inverse(torch.linalg.cholesky(found["hessian"])).numpy()
    eps = np.random.default_rng(seed).standard_normal((run.settings.elbo_draws, len(mean)))
    ours = torch.as_tensor(mean + eps @ np.linalg.cholesky(covariance).T)
    theirs = torch.as_tensor(found["z"].numpy() + eps @ np.linalg.cholesky(laplace_cov).T)
    with torch.no_grad():
        diff = (run.joint.log_joint_batched(ours) - run.joint.log_joint_batched(theirs)).numpy()
    entropy = 0.5 * (np.linalg.slogdet(covariance)[1] - np.linalg.slogdet(laplace_cov)[1])
    return float(diff.mean() + entropy), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def fit_guide(run: ModelRun, method: str, init: str = "laplace") -> Fit:
    """Fit ``GUIDES[method]`` by the ELBO; mean and covariance averaged over the last iterates.

    ``init``: ``"laplace"`` starts the covariance at ``H^-1`` at the MAP (falling back to
    ``init_scale`` when there is no positive-definite Laplace covariance), ``"scale"`` at
    ``init_scale`` times the identity.
    """
    from study.methods.laplace import MapNotFound, NotPositiveDefinite, laplace_covariance

    s = run.settings
    guide_class = GUIDES[method]
    steps = max(10, int(round(s.svi_steps * run.spec.svi_steps_scale)))
    pyro.clear_param_store()
    pyro.set_rng_seed(run.seed(method))
    init_loc_fn, init_from = start_point(run)
    guide = guide_class(run.spec.model, init_loc_fn=init_loc_fn, init_scale=s.init_scale)
    guide(**run.data)
    check_layout(guide, run, map_and_hessian(run)["z"] if init_from == "MAP" else None)
    covariance_from = f"init_scale {s.init_scale:g}"
    if init == "laplace":
        try:
            laplace_start(guide, laplace_covariance(run)[1])
            covariance_from = "Laplace H^-1"
        except (MapNotFound, NotPositiveDefinite, torch.linalg.LinAlgError, ValueError, RuntimeError):
            pass

    optimiser = ScaledLocAdam(guide, lr=s.lr_start, lr_decay=(s.lr_end / s.lr_start) ** (1.0 / steps))
    # Pair the flat mean with the guide's positive scale vector, as ScaledLocAdam pairs
    # AutoNormal's locs with its scales: the mean steps in units of the guide's scale.
    store = dict(pyro.get_param_store().named_parameters())
    prefix = guide._pyro_name
    optimiser.scale_of[store[f"{prefix}.loc"]] = store[f"{prefix}.scale"]
    optimiser._to_scale = biject_to(guide_class.scale_constraint)
    loss = CheckedJitELBO(particles(run), run.joint.max_plate_nesting)
    svi = SVI(run.spec.model, guide, optimiser, loss)

    def snapshot():
        with torch.no_grad():
            loc = guide.loc.detach().clone()
            cov = guide_covariance(guide).detach()
        return loc, cov, cov.diagonal().sqrt()

    start = time.perf_counter()
    trace = run_and_average(svi, run, method, steps, snapshot, stop_early=True)
    n = trace.averaged_steps
    mean = trace.mean.numpy()
    covariance = trace.spread.numpy()
    covariance = 0.5 * (covariance + covariance.T)
    drifts = (trace.sd_second / trace.sd_first - 1.0).abs()
    elbo, elbo_se = gaussian_elbo(run, mean, covariance, run.seed(f"{method}/elbo"))
    try:
        gain, gain_se = elbo_gain(run, mean, covariance, run.seed(f"{method}/elbo_gain"))
    except (MapNotFound, torch.linalg.LinAlgError, np.linalg.LinAlgError, ValueError, RuntimeError):
        gain, gain_se = None, None
    record_steps = trace.record_steps
    return run.new_fit(
        method,
        mean=mean,
        sd=np.sqrt(np.diag(covariance)),
        draws=gaussian_draws(mean, covariance, s.draws, run.seed(f"{method}/draws")),
        trajectory={"step": record_steps, "loss": trace.losses[record_steps], "log_sigma": trace.log_sd},
        info={
            "wall_seconds": time.perf_counter() - start,
            "steps": len(trace.losses),
            "step_cap": steps,
            "particles": particles(run),
            "rank": getattr(guide, "rank", None) or run.joint.dim,
            "init": init_from,
            "covariance_init": covariance_from,
            "jit": bool(loss.use_jit),
            "final_elbo": elbo,
            "final_elbo_se": elbo_se,
            "elbo_minus_laplace": gain,
            "elbo_minus_laplace_se": gain_se,
            "sigma_drift": float(drifts.max()),
            "sigma_drift_beyond_noise": drift_beyond_noise(drifts, trace.drift_se, trace.drift_dof),
            "averaged_over_last_steps": n,
        },
    )


def fit_svi_lowrank(run: ModelRun) -> Fit:
    """``AutoLowRankMultivariateNormal`` (rank ``round(sqrt(d))``) by the ELBO."""
    return fit_guide(run, "svi_lowrank")


def fit_svi_fullrank(run: ModelRun) -> Fit:
    """``AutoMultivariateNormal`` (dense Cholesky factor) by the ELBO."""
    return fit_guide(run, "svi_fullrank")
