"""Mean-field SVI and its sigma-collapsing expected-loss variant.

Both train the same guide, Pyro's ``AutoNormal``: an independent Gaussian
``N(mu_i, sigma_i^2)`` over every unconstrained latent ``z_i``, with ``sigma``
stored through a softplus (so ``log sigma ~ softplus^-1(sigma)`` once sigma is
small), reparameterised, and fitted with vectorised particles. They differ only
in the objective:

* ``svi_meanfield``: the full ELBO (``Trace_ELBO``),
  ``E_q[log p(y|z)] + E_q[log p(z)] + H[q]``. At its optimum
  ``sigma_i^-2 = E_q[H_ii]``, the expected diagonal of the Hessian of
  ``-log p(z, y)`` (Opper & Archambeau, "The Variational Gaussian Approximation
  Revisited", Neural Computation 2009).
* ``expected_loss``: ``E_eps[-log p(y | mu + sigma eps)]`` alone, no prior, no
  entropy. Its gradient in ``sigma`` is ``E[eps * dL/dz] ~ sigma H_ii > 0``, so
  ``log sigma`` decreases without bound.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
import pyro
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
import torch
from pyro.infer import ELBO, SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from tqdm.auto import tqdm

from study.core.context import ModelRun
from study.core.jit import graph_nodes
from study.methods.laplace import MapNotFound, map_and_hessian
from study.methods.optim import ScaledLocAdam
from study.methods.size_guard import DENSE_HESSIAN_LIMIT
from study.core.draws import diagonal_gaussian_draws
from study.core.results import Fit


class NonFiniteLoss(FloatingPointError):
    """The objective became NaN or infinite."""


class _MaskSites(Messenger):
    """Zero the log density of chosen sample sites (their values are still drawn and used)."""

    def __init__(self, latent_only: bool = False, auxiliary: bool | None = None):
        super().__init__()
        self.latent_only = latent_only
        self.auxiliary = auxiliary

    def _pyro_sample(self, msg):
        if site_is_subsample(msg) or (self.latent_only and msg["is_observed"]):
            return
        if self.auxiliary is not None and bool(msg["infer"].get("is_auxiliary")) != self.auxiliary:
            return
        msg["mask"] = False


def masked_objective(model, guide, include_prior: bool, include_entropy: bool):
    """Model and guide whose ``Trace_ELBO`` is ``-E_q[log p(y|z) + a (log p(z) + log|J|) + b H_q(z)]``,
    ``a = include_prior`` and ``b = include_entropy`` (the tests check it against an explicit
    sum of the three terms, ``tests/partial_elbo.py``).

    ``Trace_ELBO = E[log p(y|x) + log p(x) - log q]``, and AutoNormal's ``log q`` is
    ``log N(z; mu, sigma)`` (its auxiliary site: minus the entropy term) plus
    ``-log|dx/dz|`` (its Delta site: part of the unconstrained prior). So dropping the
    prior masks the model's latent sites and the guide's Delta sites; dropping the entropy
    masks the guide's auxiliary sites. Masks are fixed, so the result JIT-compiles.
    """
    if include_prior and include_entropy:
        return model, guide
    if not include_prior:
        model = _MaskSites(latent_only=True)(model)
    if not include_prior and not include_entropy:
        guide_mask = _MaskSites()
    elif not include_prior:
        guide_mask = _MaskSites(auxiliary=False)
    else:
        guide_mask = _MaskSites(auxiliary=True)
    return model, guide_mask(guide)


def guide_loc_scale(guide: AutoNormal, run: ModelRun) -> tuple[torch.Tensor, torch.Tensor]:
    """The guide's ``(mu, sigma)`` in the flat order of ``run.joint``, shapes ``(d,)``."""
    return loc_scale_reader(guide, run)()


def loc_scale_reader(guide: AutoNormal, run: ModelRun):
    """A function returning the guide's current ``(mu, sigma)`` (``guide_loc_scale``), read often.

    ``guide.locs.<site>`` goes through ``PyroModule.__getattr__`` and the param store on
    every read: 0.14 ms of a 2 ms step on a kidiq regression, where the fit reads the guide
    after every step. The reader holds the parameter store's unconstrained tensors (the
    optimiser updates them in place) and applies each site's own transform, as the guide
    does: the same bits as ``guide.locs.<site>`` and ``guide.scales.<site>`` (tested).
    """
    from torch.distributions import constraints, transform_to

    store = dict(pyro.get_param_store().named_parameters())
    prefix = guide._pyro_name
    to_loc, to_scale = transform_to(constraints.real), transform_to(guide.scale_constraint)
    locs = [store[f"{prefix}.locs.{site.name}"] for site in run.joint.sites]
    scales = [store[f"{prefix}.scales.{site.name}"] for site in run.joint.sites]

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            loc = torch.cat([to_loc(u).reshape(-1) for u in locs])
            scale = torch.cat([to_scale(u).reshape(-1) for u in scales])
        return loc, scale

    return read


@dataclass
class SVIRun:
    """Result of one optimisation: iterate averages, last iterate and the history."""

    mean: np.ndarray
    sd: np.ndarray
    last_mean: np.ndarray
    last_sd: np.ndarray
    steps: int
    loss: np.ndarray
    record_steps: np.ndarray
    log_sigma: np.ndarray
    sigma_drift: float
    wall_seconds: float
    init_from: str
    jit: bool
    sigma_from: str = ""  # where sigma started (``sigma_start``)
    sigma_changes: np.ndarray | None = None  # (d,): signed per-parameter change behind sigma_drift
    averaged_steps: int = 0  # iterates in the averaging window
    sigma_change_se: np.ndarray | None = None  # (d,): Monte Carlo SE of sigma_changes (0 where unknown)
    sigma_change_dof: int | None = None  # degrees of freedom behind sigma_change_se


@dataclass
class AveragedIterates:
    """What ``run_and_average`` kept of a run: every loss, the recorded log sds, the averages."""

    losses: np.ndarray  # (steps,)
    record_steps: np.ndarray  # (r,): about 400 recorded steps, the last one included
    log_sd: np.ndarray  # (r, d)
    mean: torch.Tensor  # (d,): the average of the means over the window
    spread: torch.Tensor  # the average of the spread (sd or covariance) over the window
    sd_first: torch.Tensor  # (d,): the average sd over the first half of the window
    sd_second: torch.Tensor  # (d,): ... and over its second half
    drift_se: torch.Tensor  # (d,): Monte Carlo SE of sd_second / sd_first - 1 (0 where unknown)
    drift_dof: int | None  # degrees of freedom behind drift_se (None where unknown)
    last_loc: torch.Tensor
    last_sd: torch.Tensor
    averaged_steps: int
    wall_seconds: float


STOP_FAMILY_FALSE_ALARM = 0.05


def drift_noise_limit(d: int, dof: int | None = None) -> float:
    """Šidák bound: ``d`` independent noise-only drifts, each divided by its estimated SE,
    all stay below it in absolute value with probability ``1 - STOP_FAMILY_FALSE_ALARM``.

    With ``dof`` the SEs are estimated from that many degrees of freedom and the ratios
    are Student-t (a normal quantile would be far too tight: at d = 1,000 and 14 dof one
    noise-only ratio in a thousand exceeds the normal bound of 4.05); without, normal.
    """
    from scipy.stats import norm, t

    tail = -math.expm1(math.log1p(-STOP_FAMILY_FALSE_ALARM) / max(1, d)) / 2.0
    return float(norm.isf(tail) if dof is None else t.isf(tail, dof))


def drift_standard_error(first_parts: torch.Tensor, second_parts: torch.Tensor) -> torch.Tensor:
    """Monte Carlo SE of each ``sd_second_i / sd_first_i - 1`` by batch means, shape ``(d,)``.

    ``first_parts`` and ``second_parts`` are the means of sigma over consecutive sub-blocks
    of each half of the window, shapes ``(n1, d)`` and ``(n2, d)``, ``n1, n2 >= 2``. Each
    half's mean has variance ``var(parts) / n`` (sub-blocks of a quarter of
    ``check_every`` steps, long against Adam's momentum time of about 10 steps, so taken
    as independent); the ratio's SE follows by the delta method.
    """
    m1, m2 = first_parts.mean(0), second_parts.mean(0)
    v1 = first_parts.var(0) / first_parts.shape[0]
    v2 = second_parts.var(0) / second_parts.shape[0]
    return torch.sqrt(v2 / m1**2 + v1 * m2**2 / m1**4)


def drift_beyond_noise(changes: torch.Tensor, se: torch.Tensor, dof: int | None = None,
                       family: int | None = None) -> float:
    """The largest ``|changes_i|`` among the coordinates whose change exceeds its noise bound
    ``drift_noise_limit(family, dof) * se_i`` (0 when none does): sigma's drift that Monte Carlo
    noise does not explain. With no SE known (``se_i = 0``), every change counts. ``family``
    (default ``d``) is how many changes are tested together: ``K d`` for ``K`` seeds."""
    changes = torch.as_tensor(changes).abs()
    family = changes.numel() if family is None else max(family, changes.numel())
    beyond = changes >= drift_noise_limit(family, dof) * torch.as_tensor(se)
    return float(changes[beyond].max()) if bool(beyond.any()) else 0.0


def converged(losses: np.ndarray, sd_first: torch.Tensor, sd_second: torch.Tensor, settings,
              first_parts: torch.Tensor | None = None, second_parts: torch.Tensor | None = None) -> bool:
    """The stopping rule of a decaying-rate SVI fit, applied to its current averaging window.

    With ``drift_i = sd_second_i / sd_first_i - 1`` (sigma_i averaged over each half of the
    window) and ``se_i`` its Monte Carlo SE (``drift_standard_error``, from the sub-block
    means ``first_parts``/``second_parts``; 0 when they are not given), all must hold:

    * no systematic drift: ``|median_i drift_i| < stop_sigma_drift``, and
      ``median_i |drift_i| < max(stop_sigma_drift, 2 median_i se_i)``. A trend moves most
      sigmas, in one direction (the signed median) or in both (the median size, which under
      noise alone is about 0.67 of the typical SE);
    * no single sigma still moving: every ``|drift_i| < max(stop_sigma_drift_max,
      z_d se_i)``, with ``z_d`` the Šidák bound for ``d`` coordinates at a 5% family false
      alarm, Student-t on the sub-blocks' degrees of freedom (``drift_noise_limit``). The fixed bound keeps one slow parameter from stopping
      short; the noise bound stops a fit whose remaining changes are the optimiser's noise,
      which grows with d (a fixed 2.5% on the largest of 10³ noisy changes never holds).
      The fixed-point residual (``study.checks.fixed_point``) stays the proof;
    * the objective has stopped falling: the mean loss of the first half minus that of
      the second is below ``stop_loss_z`` standard errors of that difference, the
      per-step losses taken as independent Monte Carlo draws (their noise is the
      particles' sampling noise, which dwarfs the step-to-step trend at convergence).

    Parameters
    ----------
    losses : np.ndarray
        The window's per-step losses, shape ``(n,)``, first half then second half.
    sd_first, sd_second : torch.Tensor
        Shape ``(d,)``: sigma averaged over each half of the window.
    first_parts, second_parts : torch.Tensor, optional
        Shapes ``(n1, d)``, ``(n2, d)``: sigma averaged over sub-blocks of each half.
    """
    signed = sd_second / sd_first - 1.0
    drift = signed.abs()
    if first_parts is not None and second_parts is not None and min(len(first_parts), len(second_parts)) >= 2:
        se = drift_standard_error(first_parts, second_parts)
        dof = len(first_parts) + len(second_parts) - 2
    else:
        se, dof = torch.zeros_like(drift), None
    if not abs(float(signed.median())) < settings.stop_sigma_drift:
        return False
    if not float(drift.median()) < max(settings.stop_sigma_drift, 2.0 * float(se.median())):
        return False
    limit = torch.clamp(drift_noise_limit(drift.numel(), dof) * se, min=settings.stop_sigma_drift_max)
    if not bool((drift < limit).all()):
        return False
    half = len(losses) // 2
    first, second = losses[:half], losses[half:]
    se_loss = math.sqrt(first.var(ddof=1) / len(first) + second.var(ddof=1) / len(second))
    return float(first.mean() - second.mean()) < settings.stop_loss_z * se_loss


def run_and_average(svi: SVI, run: ModelRun, method: str, steps: int, snapshot,
                    stop_early: bool = False, data=None, hold_steps: int = 0) -> AveragedIterates:
    """Up to ``steps`` SVI steps; iterates averaged over the last ``average_fraction`` of them.

    ``snapshot()`` returns ``(loc, spread, sd)`` of the guide after a step: ``spread`` is
    what is averaged as the fit's spread (the sd vector of a mean-field guide, the
    covariance of a richer one) and ``sd`` is recorded and split over the two halves of
    the window, which tells whether sigma has stopped moving. Raises ``NonFiniteLoss``
    at the first NaN or infinite loss.

    With ``stop_early`` (and ``Settings.stop_early``), every ``check_every`` steps from
    ``min_steps_fraction`` of ``steps`` on, the window is the last ``average_fraction``
    of the steps run so far (whole blocks of ``check_every`` steps), and the run stops
    as soon as ``converged`` holds on it; ``steps`` is the cap. ``data`` replaces ``run.data`` (e.g. on a GPU).
    With ``hold_steps`` (the learning rate held at its start, ``scale_plan``), no check comes
    before that window lies past them.
    """
    s = run.settings
    record_every = max(1, steps // 400)
    block = max(1, s.check_every)
    checking = stop_early and s.stop_early
    first_check = max(2 * block, int(steps * s.min_steps_fraction),
                      math.ceil(hold_steps / (1.0 - s.average_fraction)))
    # The window of a run that goes the whole way (summed step by step, as it always was).
    average_from = int(steps * (1.0 - s.average_fraction))
    middle = (average_from + steps) // 2
    sums = {"loc": 0.0, "spread": 0.0, "sd_first": 0.0, "sd_second": 0.0}
    window_parts = {"sd_first": [], "sd_second": []}  # sub-block means of a run that goes the whole way
    window_part = {"sd_first": [0.0, 0], "sd_second": [0.0, 0]}
    losses = np.empty(steps)
    record_steps, log_sd = [], []
    # Sums per block of `block` steps: any window of whole blocks is a sum of them.
    blocks: list[dict] = []
    current = {"loc": 0.0, "spread": 0.0, "sd": 0.0, "n": 0, "parts": [], "part": 0.0, "part_n": 0}
    part_size = max(1, block // 4)  # sub-blocks for the batch-means SE of sigma's drift
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"{run.name}: {method}", leave=False, disable=not run.progress, mininterval=1.0)

    def window(end: int) -> tuple[int, list[dict]]:
        """The averaging window of a run of ``end`` steps: its first step and its blocks."""
        count = max(2, int(round(end * s.average_fraction / block)))
        count = min(count + count % 2, len(blocks) - len(blocks) % 2)  # two halves of whole blocks
        return end - sum(b["n"] for b in blocks[-count:]), blocks[-count:]

    stopped = steps
    validate = is_validation_enabled()
    for step in bar:
        # After the first block of steps, without Pyro's argument and support checks, as a
        # compiled step runs anyway: a step of an uncompiled network took 10-20% less time
        # without them (digits_mlp_1k). The first block keeps them, so that a model whose
        # first draws leave its support fails naming its line; a later NaN stops the fit below.
        with pyro.validation_enabled(validate and step < block):
            value = svi.step(**(run.data if data is None else data))
        if not math.isfinite(value):
            raise NonFiniteLoss(f"{method} loss became {value} at step {step}")
        losses[step] = value
        loc, spread, sd = snapshot()
        if step % record_every == 0 or step == steps - 1:
            record_steps.append(step)
            log_sd.append(sd.log().numpy().copy())
        if step >= average_from:
            sums["loc"] = sums["loc"] + loc
            sums["spread"] = sums["spread"] + spread
            half = "sd_first" if step < middle else "sd_second"
            sums[half] = sums[half] + sd
            acc = window_part[half]
            acc[0], acc[1] = acc[0] + sd, acc[1] + 1
            if acc[1] == part_size:
                window_parts[half].append(acc[0] / part_size)
                acc[0], acc[1] = 0.0, 0
        if not checking:
            continue
        current["loc"] = current["loc"] + loc
        current["spread"] = current["spread"] + spread
        current["sd"] = current["sd"] + sd
        current["n"] += 1
        current["part"] = current["part"] + sd
        current["part_n"] += 1
        if current["part_n"] == part_size:
            current["parts"].append(current["part"] / part_size)
            current["part"], current["part_n"] = 0.0, 0
        if current["n"] == block or step == steps - 1:
            if current["part_n"]:
                current["parts"].append(current["part"] / current["part_n"])
            blocks.append({k: current[k] for k in ("loc", "spread", "sd", "n", "parts")})
            current = {"loc": 0.0, "spread": 0.0, "sd": 0.0, "n": 0, "parts": [], "part": 0.0, "part_n": 0}
            done = step + 1
            if done >= first_check and done < steps:
                begin, chosen = window(done)
                half = len(chosen) // 2
                sd_first = sum(b["sd"] for b in chosen[:half]) / sum(b["n"] for b in chosen[:half])
                sd_second = sum(b["sd"] for b in chosen[half:]) / sum(b["n"] for b in chosen[half:])
                first_parts = torch.stack([p for b in chosen[:half] for p in b["parts"]])
                second_parts = torch.stack([p for b in chosen[half:] for p in b["parts"]])
                if converged(losses[begin:done], sd_first, sd_second, s, first_parts, second_parts):
                    stopped = done
                    if record_steps[-1] != step:  # the trajectory ends where the run did
                        record_steps.append(step)
                        log_sd.append(sd.log().numpy().copy())
                    break
    bar.close()
    if stopped < steps:
        _, chosen = window(stopped)
        half = len(chosen) // 2
        first, second = chosen[:half], chosen[half:]
        n = sum(b["n"] for b in chosen)
        mean = sum(b["loc"] for b in chosen) / n
        spread_mean = sum(b["spread"] for b in chosen) / n
        sd_first = sum(b["sd"] for b in first) / sum(b["n"] for b in first)
        sd_second = sum(b["sd"] for b in second) / sum(b["n"] for b in second)
        first_parts = [p for b in first for p in b["parts"]]
        second_parts = [p for b in second for p in b["parts"]]
    else:
        n = steps - average_from
        mean, spread_mean = sums["loc"] / n, sums["spread"] / n
        sd_first, sd_second = sums["sd_first"] / (middle - average_from), sums["sd_second"] / (steps - middle)
        first_parts, second_parts = window_parts["sd_first"], window_parts["sd_second"]
    if min(len(first_parts), len(second_parts)) >= 2:
        drift_se = drift_standard_error(torch.stack(first_parts), torch.stack(second_parts))
        drift_dof = len(first_parts) + len(second_parts) - 2
    else:
        drift_se, drift_dof = torch.zeros_like(sd_first), None
    return AveragedIterates(
        losses=losses[:stopped], record_steps=np.asarray(record_steps), log_sd=np.stack(log_sd),
        mean=mean, spread=spread_mean, sd_first=sd_first, sd_second=sd_second, drift_se=drift_se, drift_dof=drift_dof,
        last_loc=loc, last_sd=sd, averaged_steps=n, wall_seconds=time.perf_counter() - start,
    )


def sigma_start(run: ModelRun, at_map: bool = True) -> tuple[torch.Tensor | None, str]:
    """Where the guide's sigma starts: the diagonal Laplace sd ``1/sqrt(H_ii)`` at the MAP.

    At a near-Gaussian posterior the mean-field optimum is close to it
    (``sigma_i^-2 = E_q[H_ii]``, Opper & Archambeau 2009), so the fit starts near its
    answer instead of walking ``log sigma`` from ``init_scale``: earn_height's intercept
    has sigma ~ 550 and moved from 0.1 to 22 in a 3,000-step run. This is the dense
    guides' Laplace start (``study.methods.guides``) restricted to the diagonal. It
    moves where the optimiser starts, not what it optimises; the fixed-point residual
    at the final ``q`` (``study.checks.fixed_point``) is the proof that it converged.
    Coordinates with ``H_ii <= 0`` (a network's MAP need not be a strict minimum), and
    every coordinate when there is no MAP or no exact Hessian (above the size guard),
    start at ``init_scale``, and so does a guide whose means do not start at the MAP
    (``at_map`` false: the MAP search failed, and is not run again). Returns the ``(d,)``
    start (None: ``init_scale`` everywhere) and where it came from.
    """
    s = run.settings
    fallback = f"init_scale {s.init_scale:g}"
    if s.sigma_start != "laplace" or not at_map:
        return None, fallback
    try:
        hessian = map_and_hessian(run)["hessian"]
    except (MapNotFound, torch.linalg.LinAlgError, ValueError, RuntimeError):
        return None, fallback
    if hessian is None:
        return None, fallback
    h = hessian.diagonal().detach().clone()
    usable = torch.isfinite(h) & (h > 0)
    if not bool(usable.any()):
        return None, fallback
    sd = torch.full_like(h, s.init_scale)
    sd[usable] = h[usable].rsqrt()
    where = "diagonal Laplace 1/sqrt(H_ii)"
    if not bool(usable.all()):
        where += f" ({int((~usable).sum())} of {len(h)} at init_scale {s.init_scale:g}: H_ii <= 0)"
    return sd, where


def set_guide_scales(guide: AutoNormal, run: ModelRun, sd: torch.Tensor) -> None:
    """Set ``AutoNormal``'s sigma to ``sd`` (flat order of ``run.joint``), in place.

    The unconstrained parameters are written in place, so the parameter store, the
    guide and the optimiser keep holding the same tensors.
    """
    from torch.distributions import transform_to

    to_sigma = transform_to(guide.scale_constraint)
    offset = 0
    with torch.no_grad():
        for site in run.joint.sites:
            unconstrained = attrgetter(site.name + "_unconstrained")(guide.scales)
            n = unconstrained.numel()
            value = sd[offset:offset + n].reshape(unconstrained.shape).to(unconstrained)
            unconstrained.copy_(to_sigma.inv(value))
            offset += n
    if offset != sd.numel():
        raise ValueError(f"sigma start has {sd.numel()} entries, the guide {offset}")


def start_point(run: ModelRun):
    """Where the guide's means start: the MAP when there is one, else the model's init.

    Starting at the mode saves the long walk there (kilpisjarvi's intercept is
    60 units away from 0) and, in a multimodal posterior, puts the mean-field
    fit in the mode that Laplace describes. The optimum does not depend on it;
    sigma's start is ``sigma_start``.
    """
    try:
        z_map = map_and_hessian(run)["z"]
    except (MapNotFound, torch.linalg.LinAlgError, ValueError, RuntimeError):
        return run.init_loc_fn, "model init"
    # Copies: AutoNormal's parameters may share memory with their init values, and
    # the optimiser updates them in place; the cached MAP must stay untouched.
    values = {k: v.detach().clone() for k, v in run.joint.constrain(z_map).items()}
    return init_to_value(values=values, fallback=run.init_loc_fn), "MAP"


# Above this many latents (the dense-Hessian size guard's limit) the mean-field fit runs in its
# large-model regime (``scale_plan``).
LARGE_MODEL_DIM = DENSE_HESSIAN_LIMIT
# Large-model regime: particles per step, rows per mini-batch, draws for the final ELBO,
# antithetic pairs of the gradient-only fixed-point check.
LARGE_PARTICLES = 4
LARGE_SUBSAMPLE = 256
LARGE_ELBO_DRAWS = 64
LARGE_RESIDUAL_PAIRS = 32
# Large-model regime: the fraction of the step cap run at ``lr_start`` before the decay
# (``scale_plan``); no convergence check before the averaging window lies past it.
LARGE_LR_HOLD = 0.5


def particles(run: ModelRun) -> int:
    """Particles per SVI step: the settings' ``particles``, at most the model's ``svi_particles``.

    A network's step costs in proportion to its particles (every particle is a forward pass
    over every row): on the 1,210-weight digits MLP a 32-particle step took 32 ms and an
    8-particle step 12 ms (one thread), and the three mean-field seeds took 57 s instead
    of 244 s for the same step counts. The ELBO's optimum does not depend on the
    particles; its noise does, and the fit reports the seed-to-seed standard error it has.
    """
    cap = run.spec.svi_particles
    if cap is None:
        return run.settings.particles
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"svi_particles must be a positive int or None, got {cap!r}")
    return min(run.settings.particles, cap)


def _accepts_subsample(model) -> bool:
    import inspect

    try:
        return "subsample_size" in inspect.signature(model).parameters
    except (TypeError, ValueError):
        return False


def data_rows(run: ModelRun) -> int | None:
    """Rows of the model's data: the longest leading dimension of its tensors (None without any)."""
    sizes = [v.shape[0] for v in run.data.values() if hasattr(v, "shape") and v.dim() > 0]
    return max(sizes) if sizes else None


def scale_plan(run: ModelRun) -> dict:
    """How a mean-field fit of this model runs: particles, data subsampling, check costs.

    Up to ``LARGE_MODEL_DIM`` latents: ``particles(run)`` on the full data, the
    exact Hessian diagonal at ``curvature_draws`` draws for the fixed point. Above it
    (networks of 10^4-10^6 weights), a step with 32 particles over all the rows costs a
    second or more: ``LARGE_PARTICLES`` particles, and mini-batches of ``LARGE_SUBSAMPLE``
    rows when the model takes a ``subsample_size`` keyword (its ``pyro.plate`` then scales
    the likelihood by ``N / subsample_size``); the fixed point is checked with
    gradients only (``study.checks.fixed_point.price_residual``). sigma's start is the same
    in both regimes (``init_scale`` where there is no exact Hessian). The schedule is not:
    Adam steps ``log sigma`` by up to the learning rate per step (``study.methods.optim``),
    and the geometric decay from ``lr_start`` to ``lr_end`` would let it travel
    ``steps (lr_start - lr_end) / ln(lr_start / lr_end)`` (32 units at 3,000 steps) if every
    step were a full one; with mini-batch and four-particle noise an Adam step is about
    the learning rate times the gradient's signal-to-noise ratio, and on the
    96,001-weight diabetes network the first layer's sigma travelled 1.8 units of the 2.3
    it needed (median fixed-point residual -0.53). So the large regime holds the rate at
    ``lr_start`` for the first ``LARGE_LR_HOLD`` of the cap and decays it over the rest
    (``lr_hold_fraction``): the same network then ended with mean residuals +0.027 ± 0.005
    (first layer) and +0.26 ± 0.10 (second) at the same 3,000 steps (``benchmarks/networks.py``,
    one seed; the figures the README quotes).
    """
    s = run.settings
    n = None
    if run.joint.dim <= LARGE_MODEL_DIM:
        return {"regime": "small", "particles": particles(run), "subsample_size": None,
                "elbo_draws": s.elbo_draws, "fixed_point": "hessian", "dtype": "float64", "lr_hold_fraction": 0.0}
    if _accepts_subsample(run.spec.model):
        n = data_rows(run)
    subsample = LARGE_SUBSAMPLE if n is not None and n > LARGE_SUBSAMPLE else None
    return {"regime": "large", "particles": min(particles(run), LARGE_PARTICLES), "subsample_size": subsample,
            "elbo_draws": min(s.elbo_draws, LARGE_ELBO_DRAWS), "fixed_point": "price",
            "dtype": large_fit_dtype(run), "lr_hold_fraction": LARGE_LR_HOLD}


FIT_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def large_fit_dtype(run: ModelRun) -> str:
    """The model's ``large_fit_dtype`` (``"float64"`` or ``"float32"``), checked.

    It applies in the large-model regime only (``scale_plan``'s ``"dtype"``): below
    ``LARGE_MODEL_DIM`` latents every fit is float64, and so the default study's
    numbers do not depend on it.
    """
    value = run.spec.large_fit_dtype
    if value not in FIT_DTYPES:
        raise ValueError(f"large_fit_dtype must be one of {', '.join(map(repr, FIT_DTYPES))}, got {value!r}")
    return value


def fit_dtype(run: ModelRun) -> torch.dtype:
    """The precision the mean-field SVI and IVON fits of this model run in (``scale_plan``)."""
    return FIT_DTYPES[scale_plan(run)["dtype"]]


@contextlib.contextmanager
def precision(dtype: torch.dtype):
    """Fit in ``dtype``: in float32, subnormal numbers flush to zero for the duration.

    Float32 arithmetic on subnormals (below 1.2e-38: a network's fit makes some, e.g.
    products of vanishing gradients) runs in microcode on x86, tens of times slower:
    a float32 step of the 112,510-weight digits MLP took 49 ms with them and 20 ms
    flushed (2 threads), where float64's took 45-49 ms. Flushing changes numbers
    below 1.2e-38 only. The process's default (no flushing) is restored afterwards.
    """
    flush = dtype == torch.float32 and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _to_fit(value: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``value`` on ``device``; in ``dtype`` when it is floating point (indices stay integers)."""
    return value.to(device=device, dtype=dtype) if torch.is_floating_point(value) else value.to(device)


def _cast_init(init_loc_fn, device: torch.device, dtype: torch.dtype):
    """``init_loc_fn`` whose values come out as ``_to_fit`` puts them."""
    return lambda site: _to_fit(init_loc_fn(site), device, dtype)


def optimise(
    run: ModelRun,
    method: str,
    include_prior: bool = True,
    include_entropy: bool = True,
    constant_lr: float | None = None,
    seed: int | None = None,
    steps: int | None = None,
) -> SVIRun:
    """Fit an ``AutoNormal`` guide by Adam on the ELBO, or on the ELBO without its prior
    and/or entropy term (``masked_objective``), with a decaying learning rate.

    The learning rate decays geometrically from ``lr_start`` to ``lr_end``
    (or stays at ``constant_lr``); the
    returned ``mean``/``sd`` average the iterates over the last
    ``average_fraction`` of the run. ``sigma_drift`` is the largest relative
    change of ``sigma_i`` between the two halves of that window: near 0 when
    sigma has stopped moving. ``seed`` defaults to the method's seed; ``steps`` to
    ``svi_steps`` (both times the model's ``svi_steps_scale``).
    """
    s = run.settings
    steps = max(10, int(round((s.svi_steps if steps is None else steps) * run.spec.svi_steps_scale)))
    pyro.clear_param_store()
    pyro.set_rng_seed(run.seed(method) if seed is None else seed)
    init_loc_fn, init_from = start_point(run)
    plan = scale_plan(run)
    model = run.spec.model
    data = run.data
    dtype = FIT_DTYPES[plan["dtype"]]
    if s.device != "cpu" or dtype != run.joint.dtype:
        # Data and the guide's start on the device, in the fit's precision (``large_fit_dtype``);
        # snapshots come back to the CPU in the joint's (float64), so that the averages and
        # everything computed from the fit are float64.
        device = torch.device(s.device)
        data = {k: _to_fit(v, device, dtype) if torch.is_tensor(v) else v for k, v in run.data.items()}
        if init_from == "MAP":
            values = {k: _to_fit(v, device, dtype) for k, v in run.joint.constrain(map_and_hessian(run)["z"]).items()}
            init_loc_fn = init_to_value(values=values, fallback=_cast_init(run.init_loc_fn, device, dtype))
        else:
            init_loc_fn = _cast_init(init_loc_fn, device, dtype)
    if plan["subsample_size"] is not None:
        model = functools.partial(model, subsample_size=plan["subsample_size"])
    guide = AutoNormal(model, init_loc_fn=init_loc_fn, init_scale=s.init_scale)
    guide(**data)  # creates the parameters, so the optimiser can pair means with scales
    sd_start, sigma_from = sigma_start(run, at_map=init_from == "MAP")
    if sd_start is not None:
        set_guide_scales(guide, run, sd_start)
    if constant_lr is None:
        hold = int(round(plan["lr_hold_fraction"] * steps))
        lr, lrd = s.lr_start, (s.lr_end / s.lr_start) ** (1.0 / (steps - hold))
    else:
        hold, lr, lrd = 0, constant_lr, 1.0
    model, masked_guide = masked_objective(model, guide, include_prior, include_entropy)
    loss = CheckedJitELBO(plan["particles"], run.joint.max_plate_nesting)
    svi = SVI(model, masked_guide, ScaledLocAdam(guide, lr=lr, lr_decay=lrd, hold_steps=hold), loss)

    read = loc_scale_reader(guide, run)

    def snapshot():
        loc, scale = read()
        loc, scale = loc.to("cpu", run.joint.dtype), scale.to("cpu", run.joint.dtype)
        return loc, scale, scale

    with precision(dtype):
        trace = run_and_average(svi, run, method, steps, snapshot, stop_early=constant_lr is None, data=data,
                                hold_steps=hold)
    changes = trace.sd_second / trace.sd_first - 1.0
    return SVIRun(
        mean=trace.mean.numpy(),
        sd=trace.spread.numpy(),
        last_mean=trace.last_loc.numpy(),
        last_sd=trace.last_sd.numpy(),
        steps=len(trace.losses),
        loss=trace.losses,
        record_steps=trace.record_steps,
        log_sigma=trace.log_sd,
        sigma_drift=float(changes.abs().max()),
        wall_seconds=trace.wall_seconds,
        init_from=init_from,
        sigma_from=sigma_from,
        jit=bool(loss.use_jit),
        sigma_changes=changes.numpy(),
        averaged_steps=trace.averaged_steps,
        sigma_change_se=trace.drift_se.numpy(),
        sigma_change_dof=trace.drift_dof,
    )


def elbo_estimate(run: ModelRun, mean: np.ndarray, sd: np.ndarray, seed: int) -> tuple[float, float]:
    """ELBO of ``N(mean, diag sd^2)`` by Monte Carlo, with its standard error.

    ``E_q[log p(z, y)]`` from ``elbo_draws`` draws (fewer for a large model, ``scale_plan``),
    evaluated 16 at a time, plus the exact Gaussian entropy.
    """
    z = torch.as_tensor(diagonal_gaussian_draws(mean, sd, scale_plan(run)["elbo_draws"], seed)[0])
    with torch.no_grad():
        log_joint = torch.cat([run.joint.log_joint_batched(part) for part in z.split(16)]).numpy()
    entropy = float(np.sum(np.log(sd)) + 0.5 * len(sd) * math.log(2 * math.pi * math.e))
    return float(log_joint.mean() + entropy), float(log_joint.std(ddof=1) / math.sqrt(len(log_joint)))


def _log_sigma_slope(result: SVIRun) -> np.ndarray:
    """Least-squares slope of log sigma per 1000 steps over the last half of the run, shape ``(d,)``."""
    keep = result.record_steps >= result.record_steps[-1] / 2
    x = result.record_steps[keep].astype(float)
    y = result.log_sigma[keep]
    x = x - x.mean()
    return 1000.0 * (x @ (y - y.mean(0))) / (x @ x)


def _trajectory(result: SVIRun) -> dict[str, np.ndarray]:
    return {"step": result.record_steps, "loss": result.loss[result.record_steps], "log_sigma": result.log_sigma}


class CheckedJitELBO(ELBO):
    """``JitTrace_ELBO`` (``Trace_ELBO``'s estimator, JIT-compiled: 2-4x faster here) that
    proves itself: on the step after compiling, the compiled loss must equal ``Trace_ELBO``'s
    on the same draws; otherwise (or if compiling fails, e.g. value-dependent Python control
    flow in the model) every step uses plain ``Trace_ELBO``.

    The traced graph runs without TorchScript's graph-executor optimisation passes, whatever
    its size (``study.core.jit``): the passes cost each fit its first optimised calls and
    made the steps after them no faster (kidiq 1.9 against 1.6 ms per step, garch11 4.2
    against 3.2; three fits of 300 steps each, one thread).
    """

    def __init__(self, num_particles: int, max_plate_nesting: int):
        kwargs = dict(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=max_plate_nesting)
        super().__init__(**kwargs)
        self.plain = Trace_ELBO(**kwargs)
        self.jit = JitTrace_ELBO(ignore_jit_warnings=True, **kwargs)
        self.calls = 0
        self.use_jit: bool | None = None

    def graph_nodes(self) -> int:
        """Nodes of the largest traced graph (0 before the first compiled call)."""
        compiled = getattr(getattr(self.jit, "_loss_and_surrogate_loss", None), "compiled", {})
        return max((graph_nodes(fn) for fn in compiled.values()), default=0)

    def _compiled(self, model, guide, *args, **kwargs):
        with torch.jit.optimized_execution(False):
            return self.jit.loss_and_grads(model, guide, *args, **kwargs)

    def loss(self, model, guide, *args, **kwargs):
        return self.plain.loss(model, guide, *args, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        return self.plain._get_trace(model, guide, args, kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        self.calls += 1
        if self.use_jit is False:
            return self.plain.loss_and_grads(model, guide, *args, **kwargs)
        if self.use_jit is None:
            state = torch.get_rng_state()
            try:
                compiled = self._compiled(model, guide, *args, **kwargs)
                if self.calls == 1:
                    return compiled  # the compiling call draws differently; check the next one
                after = torch.get_rng_state()
                torch.set_rng_state(state)
                with torch.no_grad():
                    plain = self.plain.loss(model, guide, *args, **kwargs)
                torch.set_rng_state(after)
                self.use_jit = math.isclose(compiled, plain, rel_tol=1e-9, abs_tol=1e-9)
            except Exception:  # compiling failed: fall back to the plain ELBO
                self.use_jit = False
            if not self.use_jit:
                for param in pyro.get_param_store().values():
                    param.unconstrained().grad = None
                torch.set_rng_state(state)
                return self.plain.loss_and_grads(model, guide, *args, **kwargs)
            return compiled
        return self._compiled(model, guide, *args, **kwargs)


def meanfield_seed(run: ModelRun, k: int) -> int:
    """Seed of the ``k``-th ``svi_meanfield`` run; run 0 keeps the method's own seed."""
    return run.seed("svi_meanfield") if k == 0 else run.seed(f"svi_meanfield/seed{k}")


def seed_standard_errors(values: np.ndarray) -> dict:
    """Monte Carlo error of a per-parameter mean over ``K`` seeds, values of shape ``(K, d)``.

    The optimiser steps ``mu`` and ``log sigma`` in units of sigma (``study.methods.optim``), so the
    seed-to-seed noise of sigma is relative and about the same for every parameter: the
    relative spread is pooled over parameters (``d (K - 1)`` degrees of freedom, where a
    per-parameter estimate from 3 seeds has 2). Both are returned.

    Returns
    -------
    dict
        ``rel_se`` (float: pooled relative SE of the mean), ``se`` ``(d,)`` (``rel_se`` times
        the mean), ``se_per_parameter`` ``(d,)`` (unpooled); all None when ``K < 2``.
    """
    K, d = values.shape
    if K < 2:
        return {"rel_se": None, "se": None, "se_per_parameter": None}
    centre = values.mean(0)
    relative = values / centre - 1.0
    rel_se = math.sqrt(float((relative**2).sum()) / (d * (K - 1)) / K)
    return {
        "rel_se": rel_se,
        "se": centre * rel_se,
        "se_per_parameter": values.std(0, ddof=1) / math.sqrt(K),
    }


def fit_svi_meanfield(run: ModelRun) -> Fit:
    """Mean-field ``AutoNormal`` by the full ELBO (``Trace_ELBO``, vectorised particles).

    ``svi_seeds`` independent runs; ``mean``/``sd`` are their averages, ``info`` holds the
    per-seed values, the standard error of ``sd`` and the fixed-point residual
    ``sigma_i^2 E_q[H_ii] - 1`` (``study.checks.fixed_point``), checked per seed at that
    seed's own ``q`` and pooled (``seed_fixed_points``).
    """
    from study.core.errors import one_line

    s = run.settings
    K = max(1, s.svi_seeds)
    results = [optimise(run, "svi_meanfield", seed=meanfield_seed(run, k)) for k in range(K)]
    result = results[0]
    means = np.stack([r.mean for r in results])  # (K, d)
    sds = np.stack([r.sd for r in results])
    mean, sd = means.mean(0), sds.mean(0)
    errors = seed_standard_errors(sds)
    # Signed relative change of sigma between the halves of the averaging window, seed-averaged.
    changes = np.mean(np.stack([r.sigma_changes for r in results]), axis=0)
    elbo, elbo_se = elbo_estimate(run, mean, sd, run.seed("svi_meanfield/elbo"))
    # Each seed's drift beyond its noise, the seeds' changes tested as one family of K d.
    drifts = [drift_beyond_noise(r.sigma_changes, r.sigma_change_se, r.sigma_change_dof, family=K * len(sd))
              for r in results]
    spread = float(np.max(means.std(0, ddof=1) / sd)) if K > 1 else None
    info = {
        "wall_seconds": sum(r.wall_seconds for r in results),
        "steps": result.steps,
        "steps_per_seed": [r.steps for r in results],
        "step_cap": max(10, int(round(s.svi_steps * run.spec.svi_steps_scale))),
        "stopped_early": any(r.steps < max(10, int(round(s.svi_steps * run.spec.svi_steps_scale))) for r in results),
        "final_elbo": elbo,
        "final_elbo_se": elbo_se,
        "sigma_drift": max(r.sigma_drift for r in results),
        "sigma_drift_beyond_noise": max(drifts),
        "sigma_drift_beyond_noise_per_seed": drifts,
        "sigma_change_per_parameter": changes.tolist(),
        "init": result.init_from,
        "sigma_start": result.sigma_from,
        "jit": all(r.jit for r in results),
        "averaged_over_last_steps": result.averaged_steps,
        "per_seed_wall_seconds": [r.wall_seconds for r in results],
        "seeds": K,
        "mean_per_seed": means.tolist(),
        "sd_per_seed": sds.tolist(),
        "sd_se": None if errors["se"] is None else errors["se"].tolist(),
        "sd_rel_se": errors["rel_se"],
        "sd_se_per_parameter": None if errors["se_per_parameter"] is None else errors["se_per_parameter"].tolist(),
        # Seeds that settle in different places (a network's hidden units swapped or turned
        # off, a multimodal posterior) make the averaged mean no seed's fit; this is the largest
        # seed-to-seed sd of a mean in units of its sigma (``SEEDS_APART``).
        "mean_spread_over_sigma": spread,
        "seeds_apart": spread is not None and spread > SEEDS_APART,
    }
    plan = scale_plan(run)
    info["scale_plan"] = plan
    info["particles"] = plan["particles"]
    info["data_subsampling"] = (
        "full batch" if plan["subsample_size"] is None else f"mini-batches of {plan['subsample_size']} rows"
    )
    info["fit_dtype"] = plan["dtype"]
    start = time.perf_counter()
    try:
        info["fixed_point"], info["fixed_point_per_seed"] = seed_fixed_points(run, results, errors["rel_se"], plan,
                                                                              changes)
    except Exception as error:  # the fit stands; the check reports why it could not run
        info["fixed_point"] = {"error": one_line(error)}
    info["fixed_point_seconds"] = time.perf_counter() - start
    return run.new_fit(
        "svi_meanfield",
        mean=mean,
        sd=sd,
        draws=diagonal_gaussian_draws(mean, sd, s.draws, run.seed("svi_meanfield/draws")),
        trajectory=_trajectory(result),
        info=info,
    )


# Seeds whose means differ by more than this many sigma (the largest seed-to-seed sd of a
# mean over its sigma) have settled in different places: the report says so.
SEEDS_APART = 1.0


def seed_fixed_points(run: ModelRun, results: list[SVIRun], sd_rel_se: float | None, plan: dict,
                      changes: np.ndarray) -> tuple[dict, list[dict]]:
    """The fixed-point residual of each seed at its own ``q``, and their pool.

    Seed ``k``'s residual ``r_ik = sigma_ik^2 E_{q_k}[H_ii] - 1`` is estimated at
    ``q_k = N(mu_k, diag sigma_k^2)`` (``study.checks.fixed_point``): the exact Hessian diagonal
    at ``curvature_draws / K`` draws per seed (so the check costs what one check at the
    averaged ``q`` did), or, in the large regime, the gradient-only estimator at
    ``LARGE_RESIDUAL_PAIRS`` pairs per seed. ``changes``: sigma's seed-averaged change over the
    averaging window, for the pooled diagnosis. Each seed's SE adds its own sigma's error, the
    seed-to-seed relative sd ``sd_rel_se sqrt(K)``. The pool (``pool_seed_residuals``) averages
    the residuals, never the means: it is what the fit reports as ``info["fixed_point"]``. The
    pool's ``d`` residuals and the seeds' ``K d`` are one family of tests (``z_limit`` over
    ``(K + 1) d``), so that a fit at its fixed point is flagged in 1% of runs, as one check was.

    Returns
    -------
    tuple
        The pooled residual with its ``diagnosis`` and ``by_site``, and per seed a dict of
        ``verdict``, ``max_abs_z``, ``off`` (how many parameters beyond the bound),
        ``z_limit``, ``text`` and ``by_site``.
    """
    from study.checks.fixed_point import (
        FIXED_POINT_ALL_COORDINATES, FIXED_POINT_SUBSET_DRAWS, diagnose, expected_curvature,
        fixed_point_residual, pool_seed_residuals, price_residual, residual_by_site, with_sigma_error,
    )

    s = run.settings
    K = len(results)
    d = run.joint.dim
    names = run.joint.param_names
    minibatch = plan["subsample_size"] is not None
    total = s.curvature_draws if d <= FIXED_POINT_ALL_COORDINATES else min(s.curvature_draws, FIXED_POINT_SUBSET_DRAWS)
    residuals = []
    for k, r in enumerate(results):
        seed = run.seed("svi_meanfield/curvature" if k == 0 else f"svi_meanfield/curvature/seed{k}")
        if plan["fixed_point"] == "price":
            residuals.append(price_residual(run.joint, r.mean, r.sd, LARGE_RESIDUAL_PAIRS, seed))
        else:
            curvature = expected_curvature(run.joint, r.mean, r.sd, math.ceil(total / K), seed)
            residuals.append(fixed_point_residual(curvature, None))
    per_seed = []
    family = d if K == 1 else (K + 1) * d
    seed_rel = None if sd_rel_se is None else sd_rel_se * math.sqrt(K)
    for r, residual in zip(results, residuals):
        own = with_sigma_error(residual, seed_rel)
        verdict = diagnose(own, r.sigma_changes, names, minibatch=minibatch, family=family)
        per_seed.append({
            "verdict": verdict["verdict"], "max_abs_z": verdict["max_abs_z"], "off": len(verdict["off"]),
            "z_limit": verdict["z_limit"], "text": verdict["text"], "by_site": residual_by_site(run.joint, own),
        })
    pooled = pool_seed_residuals(residuals, sd_rel_se)
    pooled["diagnosis"] = diagnose(pooled, changes, names, minibatch=minibatch, family=family)
    pooled["by_site"] = residual_by_site(run.joint, pooled)
    return pooled, per_seed


def fit_expected_loss(run: ModelRun) -> Fit:
    """The seed's objective: same guide, ``E_eps[-log p(y | mu + sigma eps)]`` only."""
    s = run.settings
    result = optimise(run, "expected_loss", include_prior=False, include_entropy=False, constant_lr=s.collapse_lr,
                      steps=s.collapse_steps)
    slope = _log_sigma_slope(result)
    return run.new_fit(
        "expected_loss",
        mean=result.last_mean,
        sd=result.last_sd,
        draws=diagonal_gaussian_draws(result.last_mean, result.last_sd, s.draws, run.seed("expected_loss/draws")),
        trajectory=_trajectory(result),
        info={
            "wall_seconds": result.wall_seconds,
            "steps": result.steps,
            "particles": scale_plan(run)["particles"],
            "jit": result.jit,
            "final_loss": float(result.loss[-20:].mean()),
            "log_sigma_slope_per_1000_steps": slope.tolist(),
            "median_log_sigma_slope_per_1000_steps": float(np.median(slope)),
        },
    )
