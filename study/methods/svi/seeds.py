"""The mean-field seeds as one vectorised fit, each seed on its own random stream.

``svi_seeds`` independent fits of the same model differ only in their noise. Run one after
another through Pyro's ``SVI``, each step pays the model's Python and dispatch cost once per
seed; most of a small model's step is that cost. Here the ``K`` seeds are rows of one
``(K, d)`` mean and one ``(K, d)`` softplus-scale parameter, and one call of the model's
vectorised log joint (``FlatJoint.log_joint_batched``) evaluates all ``K x P`` particles.

What keeps the seeds independent:

* seed ``k``'s particles ``eps_k`` (``P x d``) come from its own ``torch.Generator``, seeded
  with seed ``k``;
* the loss is the sum of the seeds' losses, so each seed's gradient is that of its own loss;
* Adam (``study.methods.optim.ScaledLocAdam``'s update: means stepped in units of sigma) acts
  elementwise;
* each seed has its own averaging window and stopping rule (``IterateAverager``); a seed that
  stops leaves the batch.

So seed ``k`` of a batched fit is, to rounding, the fit of seed ``k`` run alone (tested).

The objective is the ELBO of ``N(mu_k, diag sigma_k^2)`` with the Gaussian's entropy in closed
form, ``-(1/P) sum_p log p(mu_k + sigma_k eps_kp, y) - sum_i log sigma_ki - d/2 log(2 pi e)``.
Pyro's ``Trace_ELBO`` estimates the entropy from the same draws, ``-log q(z) = eps^2/2 +
log sigma + const``; both give the same gradient draw for draw (``eps`` does not depend on the
parameters), so the fit is the same and only its reported loss is less noisy.

It runs where it pays and where the seeds can share one call: on the CPU, full batch, in the
joint's precision (``scale_plan``'s small regime, the whole default study). A model fitted on
mini-batches draws its rows inside its ``pyro.plate``, from the global random stream, one set
for every particle of the call; sharing them would tie the seeds together, so the large regime
(and a fit on another device) runs each seed through ``optimise``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.util import is_validation_enabled
from pyro.distributions import constraints
from torch.distributions import transform_to
from tqdm.auto import tqdm

from study.core.context import ModelRun
from study.methods.laplace import NO_MAP, map_and_hessian
from study.methods.svi.averaging import IterateAverager, rows_kept
from study.methods.svi.loop import SVIRun, optimise
from study.methods.svi.objectives import NonFiniteLoss
from study.methods.svi.plan import scale_plan
from study.methods.svi.start import sigma_start

# Adam's moment decays and denominator floor, as ``ScaledLocAdam``'s defaults.
BETAS = (0.9, 0.99)
ADAM_EPS = 1e-8


def batches_seeds(run: ModelRun, plan: dict | None = None) -> bool:
    """Whether ``fit_seeds`` runs the seeds as one vectorised fit (else one after another)."""
    plan = scale_plan(run) if plan is None else plan
    return (plan["subsample_size"] is None and run.settings.device == "cpu"
            and plan["dtype"] == str(run.joint.dtype).removeprefix("torch."))


def _model_init(run: ModelRun, seed: int) -> torch.Tensor:
    """The model's own start (``run.init_loc_fn``) in the flat unconstrained ``z``, drawn under
    ``seed`` (an ``init_to_sample`` start differs between seeds, as an ``AutoNormal``'s does)."""
    pyro.set_rng_seed(seed)
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(InitMessenger(run.init_loc_fn)(run.spec.model)).get_trace(**run.data)
    return run.joint.unconstrain({s.name: trace.nodes[s.name]["value"][None] for s in run.joint.sites})[0]


def seed_starts(run: ModelRun, seeds: list[int]) -> tuple[torch.Tensor, str]:
    """Every seed's start of the means, ``(K, d)``: the MAP when there is one (as ``start_point``),
    else the model's init, and where it came from."""
    try:
        z = map_and_hessian(run)["z"].detach().to(run.joint.dtype)
    except NO_MAP:
        return torch.stack([_model_init(run, seed) for seed in seeds]), "model init"
    return z.expand(len(seeds), -1).clone(), "MAP"


class SeedObjective:
    """The seeds' negative ELBOs, ``(K,)``, from their means, softplus scales and particles.

    Compiled by ``torch.jit.trace`` once per batch size, and proved as ``CheckedJitELBO``
    proves Pyro's compiled ELBO: the first compiled value must equal the plain one on the same
    inputs (relative 1e-9), or every call stays plain (so does a model that cannot be traced).
    """

    def __init__(self, run: ModelRun):
        self.joint = run.joint
        self.to_sigma = transform_to(constraints.softplus_positive)
        self.compiled: dict[int, object] = {}  # batch size -> traced function, or None where plain
        self.use_jit: bool | None = None

    def plain(self, loc: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        K, P, d = eps.shape
        sigma = self.to_sigma(rho)
        z = (loc.unsqueeze(1) + sigma.unsqueeze(1) * eps).reshape(K * P, d)
        log_p = self.joint.log_joint_batched(z).reshape(K, P).mean(1)
        return -(log_p + sigma.log().sum(-1)) - 0.5 * d * math.log(2.0 * math.pi * math.e)

    def __call__(self, loc: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor, compile: bool) -> torch.Tensor:
        K = loc.shape[0]
        if not compile or self.use_jit is False:
            return self.plain(loc, rho, eps)
        if K not in self.compiled:
            try:
                with warnings.catch_warnings(), torch.jit.optimized_execution(False):
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(self.plain, (loc, rho, eps), check_trace=False)
                    value = traced(loc, rho, eps)
                plain = self.plain(loc, rho, eps)
                same = bool(torch.allclose(value, plain, rtol=1e-9, atol=1e-9))
            except Exception:  # tracing failed (e.g. a network through torch.func): stay plain
                traced, same = None, False
            self.compiled[K] = traced if same else None
            self.use_jit = same if self.use_jit is None else self.use_jit and same
            if not same:
                return self.plain(loc, rho, eps)
        traced = self.compiled[K]
        if traced is None:
            return self.plain(loc, rho, eps)
        with torch.jit.optimized_execution(False):
            return traced(loc, rho, eps)


def fit_seeds(run: ModelRun, seeds: list[int], method: str = "svi_meanfield") -> list[SVIRun]:
    """The mean-field fits of ``seeds`` (one per seed, in order), as one vectorised fit where
    ``batches_seeds`` allows, else one ``optimise`` per seed.

    Each seed's run is ``optimise``'s on the full ELBO: means at the MAP, sigma at the
    diagonal Laplace sd (``sigma_start``), the learning rate decaying from ``lr_start`` to
    ``lr_end`` over the step cap, the iterates averaged over the last ``average_fraction``
    and the run stopped by ``converged`` on its own window. A seed's ``wall_seconds`` is the
    time from the start of the batch to its stop.
    """
    plan = scale_plan(run)
    if not batches_seeds(run, plan):
        return [optimise(run, method, seed=seed) for seed in seeds]
    s = run.settings
    joint = run.joint
    steps = max(10, int(round(s.svi_steps * run.spec.svi_steps_scale)))
    K, d, P = len(seeds), joint.dim, plan["particles"]
    loc, init_from = seed_starts(run, seeds)
    sd_start, sigma_from = sigma_start(run, at_map=init_from == "MAP")
    to_sigma = transform_to(constraints.softplus_positive)
    sd = torch.full((d,), s.init_scale, dtype=joint.dtype) if sd_start is None else sd_start.to(joint.dtype)
    rho = to_sigma.inv(sd).expand(K, -1).clone()
    hold = int(round(plan["lr_hold_fraction"] * steps))
    decay = (s.lr_end / s.lr_start) ** (1.0 / (steps - hold))
    moments = [torch.zeros_like(loc) for _ in range(4)]  # m and v of the means, then of rho
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    objective = SeedObjective(run)
    averager = IterateAverager(run, steps, K, stop_early=True, hold_steps=hold)
    beta1, beta2 = BETAS
    validate = is_validation_enabled()
    bar = tqdm(range(steps), desc=f"{run.name}: {method}", leave=False, disable=not run.progress, mininterval=1.0)
    for step in bar:
        lr = s.lr_start * decay ** max(0, step - hold)
        eps = torch.stack([torch.randn((P, d), generator=g, dtype=joint.dtype) for g in generators])
        loc.requires_grad_(True)
        rho.requires_grad_(True)
        # The first block with Pyro's argument and support checks, as ``run_and_average``
        # does (a model whose first draws leave its support fails naming its line), then
        # without them, compiled where the model traces.
        first_block = step < averager.block
        with pyro.validation_enabled(validate and first_block):
            losses = objective(loc, rho, eps, compile=not first_block)
        grad_loc, grad_rho = torch.autograd.grad(losses.sum(), (loc, rho))
        losses = losses.detach()
        if not bool(torch.isfinite(losses).all()):
            row = int((~torch.isfinite(losses)).nonzero()[0])
            raise NonFiniteLoss(f"{method} loss became {float(losses[row])} at step {step} "
                                f"(seed {seeds[averager.seed_of[row]]})")
        with torch.no_grad():
            loc, rho = loc.detach(), rho.detach()
            sigma = to_sigma(rho)
            correction1, correction2 = 1.0 - beta1 ** (step + 1), 1.0 - beta2 ** (step + 1)
            updates = []
            for (m, v), grad in zip((moments[:2], moments[2:]), (grad_loc, grad_rho)):
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                updates.append(lr * (m / correction1) / ((v / correction2).sqrt() + ADAM_EPS))
            loc = loc - updates[0] * sigma  # the means step in units of sigma
            rho = rho - updates[1]
            sd = to_sigma(rho)
        stopped = averager.add(step, losses.numpy(), loc, sd, sd)
        if not averager.running:
            break
        if stopped:
            keep = rows_kept(loc.shape[0], stopped)  # the rows the averager kept
            loc, rho = loc[keep], rho[keep]
            moments = [m[keep] for m in moments]
            generators = [generators[int(r)] for r in keep]
    bar.close()
    return [SVIRun.from_trace(trace, init_from, sigma_from, bool(objective.use_jit)) for trace in averager.results]


def seeds_wall_seconds(results: list[SVIRun], batched: bool) -> float:
    """The wall time of the seeds' fits: the last stop of a batch, or the sum of lone runs."""
    walls = [r.wall_seconds for r in results]
    return max(walls) if batched else float(np.sum(walls))
