"""Shape check of a model before any fit: the vectorised-particle log joint must be the per-sample one.

Pyro's ELBO evaluates the model once for all particles, with a particle
dimension to the left of the model's plates. Code that is right for one sample
can be wrong for a batch: ``X @ w.unsqueeze(-1)`` or ``w.unsqueeze(-2) * X``
inside a plate turns the particle dimension of ``w`` into a *second* batch
dimension, the plate broadcasts it against the particle plate, and each
particle's log likelihood is summed over every particle's parameters: the
likelihood is counted once per particle and sigma shrinks by about
``sqrt(particles)``, silently.

``check_shapes`` evaluates every site's log density both ways at the same
latent values and stops the model, naming the site and both shapes (or both
values), when they disagree.
"""

from __future__ import annotations

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from study.core.joint import FlatJoint, ShapeMismatchError

# Sites whose per-particle log densities differ by more than this (relative to the
# log density's size) disagree; float64 round-off of sums over thousands of terms is ~1e-13.
RTOL, ATOL = 1e-8, 1e-8


def _sites(trace) -> dict:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
        # pyro.factor marks its (observed) site auxiliary; it is part of the log joint.
        and (site["is_observed"] or not site["infer"].get("is_auxiliary"))
    }


def _particle_count(joint: FlatJoint) -> int:
    """A particle count that equals no dimension of the model's data or sites.

    A bug that broadcasts particles against a data dimension of the same size
    would go unseen; a prime no tensor uses cannot coincide.
    """
    sizes = {n for v in joint.data.values() if isinstance(v, torch.Tensor) for n in v.shape}
    for s in joint.sites:
        sizes.update(s.shape)
        sizes.update(s.unconstrained_shape)
    for candidate in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        if candidate not in sizes:
            return candidate
    return 53


def _per_sample(joint: FlatJoint, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each site's ``log_prob`` from a plain model call at one point ``z`` of shape ``(d,)``."""
    values, _ = joint._constrain(z, None)
    trace = poutine.trace(poutine.condition(joint.model, data=values)).get_trace(**joint.data)
    trace.compute_log_prob()
    return {name: site["log_prob"] for name, site in _sites(trace).items()}


def check_shapes(joint: FlatJoint, seed: int = 0) -> dict:
    """Compare every site's log density under vectorised particles with the per-sample one.

    Parameters
    ----------
    joint : FlatJoint
    seed : int
        Seeds the latent values: ``init_z`` plus N(0, 0.1^2) noise per particle,
        so the particles differ.

    Returns
    -------
    dict
        ``particles`` and ``sites`` (name -> per-sample shape), for the record.

    Raises
    ------
    ShapeMismatchError
        One line naming the site, the per-sample shape, the shape under ``S``
        particles and the shape it should have, or the two values.
    """
    S = _particle_count(joint)
    generator = torch.Generator().manual_seed(seed)
    z = joint.init_z + 0.1 * torch.randn(S, joint.dim, generator=generator, dtype=joint.dtype)
    nesting = joint.max_plate_nesting
    with torch.no_grad():
        singles = [_per_sample(joint, z[s]) for s in range(S)]
        try:
            batched = joint.site_log_probs(z)
        except Exception as error:  # the model cannot even run with a particle dimension
            raise ShapeMismatchError(
                f"the model fails under {S} vectorised particles (the particle dimension sits at "
                f"dim {-(nesting + 1)}, left of its plates): {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}"
            ) from None
    batched.pop("__log_det__", None)
    shapes = {}
    for name, single in singles[0].items():
        if name not in batched:
            raise ShapeMismatchError(f"site {name!r} appears per sample but not under {S} vectorised particles")
        lp = batched[name]
        per_sample = tuple(single.shape)
        shapes[name] = per_sample
        if len(per_sample) > nesting:
            raise ShapeMismatchError(
                f"site {name!r}: per-sample log_prob shape {per_sample} has more batch dimensions than the "
                f"model's {nesting} plate(s); declare every batch dimension in a pyro.plate"
            )
        expected = (S,) + (1,) * (nesting - len(per_sample)) + per_sample
        if tuple(lp.shape) != expected:
            raise ShapeMismatchError(
                f"site {name!r}: log_prob has shape {per_sample} per sample but {tuple(lp.shape)} under "
                f"{S} vectorised particles (expected {expected}): the particle dimension became an extra "
                "batch dimension (e.g. `X @ w` or `w.unsqueeze(-2)` inside a plate), which counts the "
                "likelihood once per particle"
            )
        got = lp.reshape(S, -1).sum(-1)
        want = torch.stack([single_trace[name].sum() for single_trace in singles])
        if not torch.allclose(got, want, rtol=RTOL, atol=ATOL):
            worst = int(torch.argmax((got - want).abs()))
            raise ShapeMismatchError(
                f"site {name!r}: the log density under {S} vectorised particles ({float(got[worst]):.10g}, "
                f"log_prob shape {tuple(lp.shape)}) differs from the per-sample one "
                f"({float(want[worst]):.10g}, log_prob shape {per_sample}) at the same latent values"
            )
    return {"particles": S, "sites": {k: list(v) for k, v in shapes.items()}}
