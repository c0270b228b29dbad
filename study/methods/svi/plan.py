"""How a mean-field fit of a model runs: particles, mini-batches, precision, check costs."""

from __future__ import annotations

import contextlib

import torch

from study.core.context import ModelRun
from study.methods.size_guard import DENSE_HESSIAN_LIMIT


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
