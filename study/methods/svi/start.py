"""Where a Gaussian guide starts: its means at the MAP, its sigma at the diagonal Laplace sd."""

from __future__ import annotations

from operator import attrgetter

import torch
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value

from study.core.context import ModelRun
from study.methods.laplace import NO_MAP, map_and_hessian


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
    except NO_MAP:
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
    except NO_MAP:
        return run.init_loc_fn, "model init"
    # Copies: AutoNormal's parameters may share memory with their init values, and
    # the optimiser updates them in place; the cached MAP must stay untouched.
    values = {k: v.detach().clone() for k, v in run.joint.constrain(z_map).items()}
    return init_to_value(values=values, fallback=run.init_loc_fn), "MAP"
