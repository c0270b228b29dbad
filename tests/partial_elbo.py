"""The tests' oracle for ``study.methods.svi.masked_objective``: the partial ELBO written out term by term."""

import pyro
import pyro.poutine as poutine
import torch


class PartialELBO:
    """``-E_q[log p(y|z) + a (log p(z) + log|J|) + b H_q(z)]`` with ``a, b`` in ``{0, 1}``.

    ``a = b = 1`` is the ELBO (equal to ``Trace_ELBO``'s loss on the same
    draws); ``a = b = 0`` is the seed's expected loss. The prior term is taken in
    unconstrained coordinates (prior density times the Jacobian of the
    constraining map), so dropping it means a prior flat in the guide's space.

    Parameters
    ----------
    num_particles : int
        Vectorised particles per evaluation.
    max_plate_nesting : int
        Plates of the model; the particle dimension goes to their left.
    include_prior, include_entropy : bool
        Whether the prior term and the entropy term enter the objective.
    """

    def __init__(self, num_particles: int, max_plate_nesting: int, include_prior: bool, include_entropy: bool):
        self.num_particles = num_particles
        self.particle_dim = -(max_plate_nesting + 1)
        self.include_prior = include_prior
        self.include_entropy = include_entropy

    def _vectorised(self, fn):
        def wrapped(*args, **kwargs):
            with pyro.plate("num_particles_vectorized", self.num_particles, dim=self.particle_dim):
                return fn(*args, **kwargs)

        return wrapped

    def terms(self, model, guide, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The three terms, each averaged over particles: ``likelihood``, ``prior``, ``entropy``."""
        guide_trace = poutine.trace(self._vectorised(guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(
            poutine.replay(self._vectorised(model), trace=guide_trace)
        ).get_trace(*args, **kwargs)
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
        zero = torch.zeros(())
        likelihood, prior, entropy = zero, zero, zero
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site.get("log_prob_sum") is None:
                continue
            if site["is_observed"]:
                likelihood = likelihood + site["log_prob_sum"]
            else:
                prior = prior + site["log_prob_sum"]
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or site.get("log_prob_sum") is None:
                continue
            if site["infer"].get("is_auxiliary"):
                entropy = entropy - site["log_prob_sum"]  # -log N(z; mu, sigma)
            else:
                # AutoNormal's Delta site carries log_density = -log|dx/dz|: moving it to
                # the prior side turns log p(x) into the unconstrained log p(z).
                prior = prior - site["log_prob_sum"]
        n = self.num_particles
        return {"likelihood": likelihood / n, "prior": prior / n, "entropy": entropy / n}

    def __call__(self, model, guide, *args, **kwargs) -> torch.Tensor:
        t = self.terms(model, guide, *args, **kwargs)
        objective = t["likelihood"]
        if self.include_prior:
            objective = objective + t["prior"]
        if self.include_entropy:
            objective = objective + t["entropy"]
        return -objective
