"""IVON: the variational optimiser's own sigma, on the network the Pyro model defines.

IVON (Shen et al., "Variational Learning is Effective for Large Deep Networks",
ICML 2024; PyPI ``ivon-opt``) keeps, per weight, a mean ``m_i`` and a running
estimate ``h_i`` of the expected Hessian diagonal of the *average* loss
``L(theta) = -(1/N) log p(y | theta)``, and samples the weights from
``N(m, diag sigma^2)`` with

    sigma_i = 1 / sqrt(lambda (h_i + delta)),

``lambda`` the effective sample size and ``delta`` the weight decay. With
``lambda = N`` and ``delta = prior precision / N`` the posterior precision it
implies is ``N h_i + prior precision``: the mean-field fixed point
``sigma_i^-2 = E_q[H_ii]`` of ``-log p(theta, y)`` (Opper & Archambeau 2009)
when ``h_i`` is ``E_q`` of the likelihood's Hessian diagonal. ``h`` is updated
by an exponential moving average with rate ``1 - beta2`` of Price's estimator
``g_i eps_i / sigma_i`` (``g`` the gradient at the sampled weights, ``eps`` the
standard normal noise that drew them), so it forgets its initial value
``hess_init`` on a timescale of ``1 / (1 - beta2)`` steps.

That timescale is the setting that matters. At the package default ``beta2 =
0.99999`` (10^5 steps) an ordinary run never leaves ``hess_init`` and the sigma
it reports measures the setting, not the curvature. Here ``beta2 = 1 -
forgetting / steps`` (``IVONConfig``): the run lasts ``forgetting`` timescales,
``hess_init`` keeps a weight ``exp(-forgetting)`` in the final ``h``, and the fit
reports how far ``h`` moved from ``hess_init`` (``info["h_moved_median"]``, the
median of ``|h_i / hess_init - 1|``) and the trajectory of its quantiles.

The reported sd averages ``h`` over the last quarter of the run (as the
mean-field SVI fits average their iterates); ``info["sd_last"]`` is the final
iterate's. Standard errors come from independent seeds (``Settings.svi_seeds``),
pooled as for ``svi_meanfield``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from study.core.context import ModelRun
from study.core.draws import diagonal_gaussian_draws
from study.core.results import Fit

# Coordinates whose full h trajectory is kept (a fixed random subset, the same for every seed).
TRACKED_COORDINATES = 64


@dataclass(frozen=True)
class IVONConfig:
    """Settings of one IVON run.

    Attributes
    ----------
    steps : int
        Optimiser steps (one per mini-batch).
    lr : float
        IVON's learning rate (the package rescales it by ``hess_init + delta``).
    hess_init : float
        Initial ``h``; the initial sd is ``1/sqrt(N hess_init + prior precision)``.
    forgetting : float
        ``beta2 = 1 - forgetting / steps``: the run lasts this many timescales of
        ``h``, so ``hess_init`` keeps a weight ``exp(-forgetting)`` at the end.
    beta1 : float
        Momentum of the gradient.
    mc_samples : int
        Weight samples per step (gradients and Hessian estimates averaged).
    batch_size : int or None
        Mini-batch size; ``None`` is the full batch. A mini-batch loss is the
        average over its rows, so ``lambda = N`` scales it to the whole data set.
    average_fraction : float
        ``h`` (and the mean) are averaged over this last fraction of the steps.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    steps: int = 3000
    lr: float = 0.1
    hess_init: float = 0.1
    forgetting: float = 10.0
    beta1: float = 0.9
    mc_samples: int = 1
    batch_size: int | None = None
    average_fraction: float = 0.25
    device: str = "cpu"

    @property
    def beta2(self) -> float:
        return 1.0 - self.forgetting / self.steps


@dataclass
class IVONRun:
    """One IVON run, in the module's parameter order (``parameters_to_vector``).

    Attributes
    ----------
    mean, h : np.ndarray
        Shape ``(p,)``: averaged over the last ``average_fraction`` of the steps.
    last_mean, last_h : np.ndarray
        Shape ``(p,)``: the final iterate.
    sd, last_sd : np.ndarray
        Shape ``(p,)``: ``1/sqrt(ess (h + delta))`` of the averaged and the final ``h``.
    record_steps : np.ndarray
        Shape ``(r,)``.
    h_quantiles : np.ndarray
        Shape ``(r, 3)``: the 10%, 50% and 90% quantiles of ``h / hess_init`` over weights.
    h_moved : np.ndarray
        Shape ``(r,)``: median over weights of ``|h_i / hess_init - 1|``.
    h_tracked : np.ndarray
        Shape ``(r, k)``: ``h`` of the ``tracked`` coordinates.
    tracked : np.ndarray
        Shape ``(k,)``: indices of the tracked coordinates.
    loss : np.ndarray
        Shape ``(r,)``: the mini-batch average loss at the sampled weights.
    """

    mean: np.ndarray
    h: np.ndarray
    sd: np.ndarray
    last_mean: np.ndarray
    last_h: np.ndarray
    last_sd: np.ndarray
    record_steps: np.ndarray
    h_quantiles: np.ndarray
    h_moved: np.ndarray
    h_tracked: np.ndarray
    tracked: np.ndarray
    loss: np.ndarray
    wall_seconds: float
    peak_memory_bytes: int | None = None
    extra: dict = field(default_factory=dict)


def average_nll(likelihood: str, sigma_noise: float):
    """The per-row average negative log-likelihood IVON minimises, as ``loss(output, target)``.

    ``"regression"``: ``mean_n sum_k (f_nk - y_nk)^2 / (2 sigma_noise^2)`` (constants dropped);
    ``"classification"``: the mean softmax cross-entropy; ``"joint"``: the module's output is the
    loss itself (``FlatLogJoint``).
    """
    if likelihood == JOINT:
        return lambda output, target: output
    if likelihood == "regression":
        scale = 0.5 / float(sigma_noise) ** 2

        def loss(output, target):
            return scale * (output - target).square().reshape(len(output), -1).sum(-1).mean()

        return loss
    if likelihood == "classification":
        return torch.nn.functional.cross_entropy
    raise ValueError(f"unknown likelihood {likelihood!r}: expected 'regression' or 'classification'")


JOINT = "joint"


class FlatLogJoint(torch.nn.Module):
    """IVON's loss for a model without a network: ``-log p(z, y) / N`` over its flat latent vector.

    The one parameter is the model's unconstrained latent vector ``z`` (``FlatJoint`` order);
    the loss is the whole log joint, prior and Jacobian included, over the number of rows ``N``.
    So IVON runs with weight decay 0 and ``lambda = N``, and ``N h_i`` estimates ``E_q[H_ii]``
    of ``-log p(z, y)``: the mean-field fixed point's precision, as with a network, where the
    prior is IVON's weight decay instead. ``joint`` may be the model on mini-batches of rows
    (``subsample_size``: its ``pyro.plate`` draws the rows and scales their likelihood by
    ``N / B``), the mini-batching of the mean-field fit. The forward pass ignores its input.
    """

    def __init__(self, joint, start: torch.Tensor, rows: int):
        super().__init__()
        self.joint = joint
        self.rows = int(rows)
        self.z = torch.nn.Parameter(start.detach().clone())

    def forward(self, _inputs=None) -> torch.Tensor:
        return -self.joint.log_joint_batched(self.z.unsqueeze(0))[0] / self.rows


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``; a clear error when CUDA is asked for and absent."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(device)


def train_ivon(
    module: torch.nn.Module,
    likelihood: str,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    prior_precision: float,
    config: IVONConfig,
    seed: int,
    sigma_noise: float = 1.0,
    progress=None,
) -> IVONRun:
    """Train ``module`` with IVON from its current weights; ``lambda = N``, ``delta = prior_precision / N``.

    Parameters
    ----------
    module : torch.nn.Module
        Trained in place (its weights end at the last mean).
    likelihood : str
        ``"regression"`` or ``"classification"`` (see ``average_nll``).
    inputs, targets : torch.Tensor
        Shapes ``(N, ...)``; targets are class indices for classification.
    prior_precision : float
        Precision of the isotropic Gaussian prior on every weight (0 for a ``"joint"`` loss,
        which holds the prior itself).
    config : IVONConfig
    seed : int
    sigma_noise : float
        Observation noise sd (regression).
    progress : callable or None
        Wraps the step range (e.g. ``tqdm``).

    Returns
    -------
    IVONRun
    """
    import ivon

    if prior_precision <= 0 and not (likelihood == JOINT and prior_precision == 0):
        raise ValueError(f"prior precision must be positive, got {prior_precision}")
    if not 0.0 < config.forgetting < config.steps:
        raise ValueError(f"forgetting must lie in (0, steps), got {config.forgetting} for {config.steps} steps")
    device = resolve_device(config.device)
    module = module.to(device)
    inputs, targets = inputs.to(device), targets.to(device)
    n = len(inputs)
    loss_fn = average_nll(likelihood, sigma_noise)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
        torch.cuda.reset_peak_memory_stats(device)
    optimiser = ivon.IVON(
        module.parameters(), lr=config.lr, ess=n, hess_init=config.hess_init, beta1=config.beta1,
        beta2=config.beta2, weight_decay=prior_precision / n, mc_samples=config.mc_samples,
    )
    group = optimiser.param_groups[0]
    p = group["numel"]
    tracked = np.sort(np.random.default_rng(seed).choice(p, size=min(TRACKED_COORDINATES, p), replace=False))
    tracked_t = torch.as_tensor(tracked, device=device)
    batch = n if config.batch_size is None else min(n, int(config.batch_size))
    record_every = max(1, config.steps // 200)
    average_from = int(config.steps * (1.0 - config.average_fraction))
    sums = {"mean": 0.0, "h": 0.0}
    records: dict[str, list] = {"step": [], "q": [], "moved": [], "tracked": [], "loss": []}
    probs = torch.tensor([0.1, 0.5, 0.9], dtype=group["hess"].dtype, device=device)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    start = time.perf_counter()
    steps = range(config.steps) if progress is None else progress(range(config.steps))
    for step in steps:
        if batch < n:
            if cursor + batch > n:
                order, cursor = torch.randperm(n, generator=generator), 0
            rows = order[cursor : cursor + batch].to(device)
            cursor += batch
            x, y = inputs[rows], targets[rows]
        else:
            x, y = inputs, targets
        total = 0.0
        for _ in range(config.mc_samples):
            with optimiser.sampled_params(train=True):
                optimiser.zero_grad()
                loss = loss_fn(module(x), y)
                loss.backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            raise FloatingPointError(f"ivon loss became {total} at step {step}")
        optimiser.step()
        hess = group["hess"]
        if step >= average_from:
            flat = torch.nn.utils.parameters_to_vector(module.parameters()).detach()
            sums["mean"] = sums["mean"] + flat
            sums["h"] = sums["h"] + hess
        if step % record_every == 0 or step == config.steps - 1:
            ratio = hess / config.hess_init
            records["step"].append(step)
            records["q"].append(torch.quantile(ratio[:: max(1, p // 100_000)], probs).cpu().numpy())
            records["moved"].append(float((ratio - 1.0).abs().median()))
            records["tracked"].append(hess[tracked_t].cpu().numpy())
            records["loss"].append(total / config.mc_samples)
    wall = time.perf_counter() - start
    count = config.steps - average_from
    delta = prior_precision / n
    h_avg = (sums["h"] / count).cpu().double().numpy()
    h_last = group["hess"].detach().cpu().double().numpy()
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return IVONRun(
        mean=(sums["mean"] / count).cpu().double().numpy(),
        h=h_avg,
        sd=1.0 / np.sqrt(n * (h_avg + delta)),
        last_mean=torch.nn.utils.parameters_to_vector(module.parameters()).detach().cpu().double().numpy(),
        last_h=h_last,
        last_sd=1.0 / np.sqrt(n * (h_last + delta)),
        record_steps=np.asarray(records["step"]),
        h_quantiles=np.stack(records["q"]),
        h_moved=np.asarray(records["moved"]),
        h_tracked=np.stack(records["tracked"]),
        tracked=tracked,
        loss=np.asarray(records["loss"]),
        wall_seconds=wall,
        peak_memory_bytes=peak,
    )


def ivon_config(run: ModelRun) -> IVONConfig:
    """The study's IVON settings: as many steps as an SVI fit, on the run's device.

    On a large model the mini-batches of the mean-field fit (``study.methods.svi.scale_plan``):
    both see the same amount of data per step.
    """
    from study.methods.svi import scale_plan

    steps = max(100, int(round(run.settings.svi_steps * run.spec.svi_steps_scale)))
    return IVONConfig(steps=steps, device=run.settings.device, batch_size=scale_plan(run)["subsample_size"])


def _start_weights(run: ModelRun) -> tuple[torch.Tensor, str]:
    """The MAP the other methods share (so IVON describes the same mode), else the model's init.

    Above the size guard the MAP search builds no Hessian (``study.methods.laplace.find_map``).
    """
    from study.methods.laplace import NO_MAP, map_and_hessian

    try:
        return map_and_hessian(run)["z"], "MAP"
    except NO_MAP:
        return run.joint.init_z.detach(), "model init"


def applicability(run: ModelRun) -> str | None:
    """None where IVON runs: a model with a ``laplace_torch`` network, or any model without one
    (on its flat log joint) except the posteriordb posteriors, which are compared with their gold
    draws and are not the networks and own models IVON is run for (47 more IVON fits of 3 seeds
    each would add minutes to the default study for no question it asks)."""
    if run.spec.laplace_torch is None and run.spec.posteriordb:
        return ("a posteriordb posterior: IVON runs on networks and on models of your own (on their flat log "
                "joint where they have no network), not on the posteriordb comparison")
    return None


def fit_ivon(run: ModelRun) -> Fit:
    """IVON, ``Settings.svi_seeds`` seeds averaged: on the model's ``laplace_torch`` network, or,
    where the model has none, on its flat log joint (``FlatLogJoint``).

    ``sd`` is ``1/sqrt(N (h + delta))`` from ``h`` averaged over the last quarter of each
    run, then over seeds; ``info`` holds ``h`` per weight (flat latent order), its seed SE,
    how far ``h`` moved from ``hess_init`` and the trajectory of its quantiles.
    """
    from study.methods.laplace_torch import _flat_index
    from study.methods.svi import fit_dtype, precision, scale_plan, seed_standard_errors

    s = run.settings
    config = ivon_config(run)
    start_z, start_from = _start_weights(run)
    dtype = fit_dtype(run)  # float64, or the model's large_fit_dtype above LARGE_MODEL_DIM latents
    d = run.joint.dim
    if run.spec.laplace_torch is not None:
        problem = run.spec.laplace_torch(run.data)
        index = _flat_index(run, problem.module, problem.site_of_parameter)
        inputs = problem.inputs.to(dtype)
        targets = problem.targets if problem.likelihood == "classification" else problem.targets.to(dtype)
        likelihood, prior_precision, sigma_noise = problem.likelihood, float(problem.prior_precision), float(problem.sigma_noise)
        objective = "the model's laplace_torch network"
        train_config = config

        def make_module():
            module = run.spec.laplace_torch(run.data).module.to(dtype)
            torch.nn.utils.vector_to_parameters(start_z[torch.as_tensor(index)].to(dtype), module.parameters())
            return module
    else:
        joint, rows = flat_joint_for_ivon(run, dtype)
        index = np.arange(d)
        inputs, targets = torch.zeros(rows, 0, dtype=dtype), torch.zeros(rows, dtype=dtype)
        likelihood, prior_precision, sigma_noise = JOINT, 0.0, 1.0
        # The model subsamples its own rows (its plate), so IVON takes the whole (empty) batch.
        train_config = replace(config, batch_size=None)
        objective = "the model's flat log joint (no laplace_torch network)"

        def make_module():
            return FlatLogJoint(joint, start_z.to(dtype), rows)
    runs = []
    for k in range(max(1, s.svi_seeds)):
        module = make_module()
        seed = run.seed("ivon") if k == 0 else run.seed(f"ivon/seed{k}")
        with precision(dtype):
            runs.append(train_ivon(module, likelihood, inputs, targets, prior_precision, train_config, seed,
                                   sigma_noise=sigma_noise))

    def flat(values: np.ndarray) -> np.ndarray:
        out = np.empty(d)
        out[index] = values
        return out

    sds = np.stack([flat(r.sd) for r in runs])
    errors = seed_standard_errors(sds)
    mean = np.mean([flat(r.mean) for r in runs], axis=0)
    sd = sds.mean(0)
    h = np.mean([flat(r.h) for r in runs], axis=0)
    first = runs[0]
    info = {
        "wall_seconds": sum(r.wall_seconds for r in runs),
        "steps": config.steps,
        "seeds": len(runs),
        "objective": objective,
        "config": asdict(config) | {"beta2": config.beta2},
        "ess": len(inputs),
        "weight_decay": prior_precision / len(inputs),
        "prior_precision": prior_precision if likelihood != JOINT else None,
        "likelihood": likelihood,
        "data_subsampling": "full batch" if config.batch_size is None else f"mini-batches of {config.batch_size}",
        "fit_dtype": scale_plan(run)["dtype"],
        "init": start_from,
        "h": h.tolist(),
        "sd_last": np.mean([flat(r.last_sd) for r in runs], axis=0).tolist(),
        "sd_se": None if errors["se"] is None else errors["se"].tolist(),
        "sd_rel_se": errors["rel_se"],
        "h_moved_median": float(np.median(np.abs(h / config.hess_init - 1.0))),
        # Price's estimator can be negative; IVON's update keeps h + delta > 0, but h itself may not be.
        "h_negative_share": float(np.mean(h < 0)),
        "h_over_init_quantiles": np.quantile(h / config.hess_init, [0.1, 0.5, 0.9]).tolist(),
        "h_trajectory": {
            "step": first.record_steps.tolist(),
            "quantiles_over_init": first.h_quantiles.tolist(),
            "moved_median": first.h_moved.tolist(),
            "tracked_flat_index": index[first.tracked].tolist(),
            "tracked_h": first.h_tracked.tolist(),
        },
        "peak_memory_bytes": first.peak_memory_bytes,
    }
    return run.new_fit(
        "ivon", mean=mean, sd=sd,
        draws=diagonal_gaussian_draws(mean, sd, s.draws, run.seed("ivon/draws")),
        trajectory={"step": first.record_steps, "loss": first.loss},
        info=info,
    )


def flat_joint_for_ivon(run: ModelRun, dtype: torch.dtype):
    """The log joint IVON trains where the model has no network, and its number of rows ``N``.

    On mini-batches of rows when the mean-field fit uses them (``scale_plan``): a
    ``FlatJoint`` of the model with ``subsample_size``, whose plate draws fresh rows at every
    evaluation. ``N`` is the rows of the data (the longest leading dimension of its tensors;
    1 for a model without any), the effective sample size ``lambda``: the loss is divided by
    it and ``N h`` multiplied back, so only the product matters.
    """
    import functools

    from study.core.joint import FlatJoint
    from study.methods.svi import data_rows, scale_plan

    rows = data_rows(run) or 1
    data = {k: v.to(dtype) if torch.is_tensor(v) and torch.is_floating_point(v) else v for k, v in run.data.items()}
    subsample = scale_plan(run)["subsample_size"]
    model = run.spec.model if subsample is None else functools.partial(run.spec.model, subsample_size=subsample)
    return FlatJoint(model, data, run.init_loc_fn, memory_budget=run.joint.memory_budget), rows
