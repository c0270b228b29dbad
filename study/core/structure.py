"""The model's graph, as far as the report needs it: which scale parameters have hierarchical children.

A latent scale τ > 0 on which other latent sites depend through their prior
(``theta ~ Normal(mu, tau)``) makes the posterior a funnel: the children's
conditional sd shrinks with τ, so the curvature that a Gaussian approximation
reads at one point is wrong elsewhere (Neal 2003, "Slice sampling", §8;
Betancourt & Girolami 2015, "Hamiltonian Monte Carlo for hierarchical models").
A non-centred model (``theta = mu + tau * theta_raw``, ``theta_raw ~ Normal(0, 1)``)
has no such child: τ enters the likelihood only.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from study.core.joint import init_to_unconstrained_zero, transform_label


def _latent_log_priors(model, data, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each latent site's prior log density at ``values`` (every latent fixed)."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace(**dict(data))
    return {name: trace.nodes[name]["fn"].log_prob(trace.nodes[name]["value"]) for name in values}


def hierarchical_scales(model: Callable[..., Any], data: Mapping[str, Any]) -> dict[str, list[str]]:
    """Latent scale sites (support (0, ∞), a log in unconstrained space) with latent children.

    A child is a latent site whose prior density moves when the scale moves: every
    latent is fixed at its unconstrained-zero start, the scale is multiplied by e, and
    the children are the other latent sites whose prior log density changed. One model
    evaluation per scale site, no sampling (improper priors are fine).

    Parameters
    ----------
    model : callable
        Pyro model, called as ``model(**data)``.
    data : mapping
        Its keyword arguments.

    Returns
    -------
    dict
        Scale site name -> sorted names of its child sites; empty when there are none.
        Raises whatever the model raises.

    Examples
    --------
    >>> import pyro, pyro.distributions as dist
    >>> def centred():
    ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
    ...     theta = pyro.sample("theta", dist.Normal(0.0, tau))
    ...     pyro.sample("y", dist.Normal(theta, 1.0), obs=torch.tensor(0.3))
    >>> hierarchical_scales(centred, {})
    {'tau': ['theta']}
    """
    started = InitMessenger(init_to_unconstrained_zero)(model)
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(started).get_trace(**dict(data))
    latents = {name: site for name, site in trace.nodes.items()
               if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)}
    values = {name: site["value"] for name, site in latents.items()}
    scales = [name for name, site in latents.items() if transform_label(biject_to(site["fn"].support)) == "log"]
    if not scales:
        return {}
    before = _latent_log_priors(model, data, values)
    out: dict[str, list[str]] = {}
    for scale in scales:
        after = _latent_log_priors(model, data, {**values, scale: values[scale] * math.e})
        children = sorted(name for name in latents
                          if name != scale and not torch.allclose(after[name], before[name]))
        if children:
            out[scale] = children
    return out
