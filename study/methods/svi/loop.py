"""One SVI fit of Pyro's ``AutoNormal`` guide by Adam, through Pyro's ``SVI``."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value

from study.core.context import ModelRun
from study.core.draws import diagonal_gaussian_draws
from study.methods.laplace import map_and_hessian
from study.methods.optim import ScaledLocAdam
from study.methods.svi.averaging import AveragedIterates, run_and_average
from study.methods.svi.objectives import CheckedJitELBO, masked_objective
from study.methods.svi.plan import FIT_DTYPES, _cast_init, _to_fit, precision, scale_plan
from study.methods.svi.start import set_guide_scales, sigma_start, start_point


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

    @classmethod
    def from_trace(cls, trace: AveragedIterates, init_from: str, sigma_from: str, jit: bool) -> "SVIRun":
        """The run ``trace`` records (``run_and_average``, ``IterateAverager``), its start and engine."""
        changes = trace.sd_second / trace.sd_first - 1.0
        return cls(
            mean=trace.mean.numpy(), sd=trace.spread.numpy(), last_mean=trace.last_loc.numpy(),
            last_sd=trace.last_sd.numpy(), steps=len(trace.losses), loss=trace.losses,
            record_steps=trace.record_steps, log_sigma=trace.log_sd, sigma_drift=float(changes.abs().max()),
            wall_seconds=trace.wall_seconds, init_from=init_from, sigma_from=sigma_from, jit=jit,
            sigma_changes=changes.numpy(), averaged_steps=trace.averaged_steps,
            sigma_change_se=trace.drift_se.numpy(), sigma_change_dof=trace.drift_dof,
        )


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
    return SVIRun.from_trace(trace, init_from, sigma_from, bool(loss.use_jit))


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
