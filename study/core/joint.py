"""The log joint of a Pyro model as a function of one flat unconstrained vector.

Every method of the study (mean-field SVI, Laplace, NUTS, the references) is
compared in the same coordinates: the unconstrained space where Pyro's
``AutoNormal`` guide lives. A latent site ``x`` with support ``S`` becomes
``z = biject_to(S).inv(x)``; the flat vector concatenates the sites in the order
the model samples them. The target density in these coordinates is

    log p(z, y) = log p(x(z), y) + log |det dx/dz|,

the same target as Pyro's ``AutoLaplaceApproximation`` and ``NUTS``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from torch.distributions import biject_to, transforms

from study.core.memory import LiveBytes, large_blocks_from_heap
from study.core.settings import DEFAULT_MEMORY_BUDGET

# Unit vectors of the first batched pass of a joint's first Hessian, whose bytes are counted.
HESSIAN_PROBE_ROWS = 2
# The passes' temporaries come from the heap (``study.core.memory.large_blocks_from_heap``),
# where a pass's freed blocks sit beside the next pass's. On the 3,000 x 2,000 design of
# ``benchmarks/model_files/logistic_2000_sum.py`` (72 MB counted per product, 96 MB for the
# d x d arrays) the resident set above the start measured 334-380 MB at 1 product per pass,
# 550-852 MB at 2, 579-1,508 MB at 4 and 1,329 MB at 6 (up to 5.2 times the counted bytes),
# at 36-48 s a Hessian throughout; with a fresh mapping per block, 388 MB and 126 s at 4.
# The budget counts each product eight times.
HEAP_SLACK = 8


class ModelScopeError(ValueError):
    """The model is outside what the study can answer (e.g. a discrete latent)."""


class ShapeMismatchError(ValueError):
    """The vectorised-particle log joint disagrees with the per-sample one."""


def init_to_unconstrained_zero(site=None):
    """Start every latent at ``z = 0`` in unconstrained space, without sampling.

    Unlike Pyro's ``init_to_feasible`` it never calls ``sample()``, so improper
    priors (``ImproperUniform``) work. Deterministic, hence reproducible.
    """
    if site is None:
        return init_to_unconstrained_zero
    fn = site["fn"]
    transform = biject_to(fn.support)
    shape = transform.inv.forward_shape(fn.shape())
    return transform(torch.zeros(shape, dtype=torch.get_default_dtype()))


def transform_label(transform) -> str:
    """Short name of the map from constrained to unconstrained values ("" if identity)."""
    if isinstance(transform, transforms.IndependentTransform):
        return transform_label(transform.base_transform)
    if isinstance(transform, transforms.ComposeTransform):
        parts = [transform_label(t) for t in transform.parts]
        parts = [p for p in parts if p]
        return parts[0] if len(parts) == 1 else "+".join(parts)
    if isinstance(transform, transforms.ExpTransform):
        return "log"
    if isinstance(transform, transforms.SigmoidTransform):
        return "logit"
    if isinstance(transform, transforms.StickBreakingTransform):
        return "stick-breaking"
    if type(transform).__name__ == "OrderedTransform":
        return "ordered"
    if isinstance(transform, transforms.AffineTransform):
        return ""
    if transform.__class__.__name__ == "_InverseTransform":
        return ""
    if transform == transforms.identity_transform or isinstance(
        transform, type(transforms.identity_transform)
    ):
        return ""
    return "unconstrained"


@dataclass(frozen=True)
class LatentSite:
    """One latent sample site and its place in the flat vector.

    Attributes
    ----------
    name : str
        Pyro site name.
    transform : torch.distributions.Transform
        Unconstrained -> constrained (``biject_to(support)``).
    shape : torch.Size
        Shape of the constrained value without particle dimensions.
    unconstrained_shape : torch.Size
        Shape of the unconstrained value without particle dimensions.
    batch_dims : int
        Number of plate (batch) dimensions of the site's distribution.
    offset : int
        First index of the site in the flat vector.
    is_normal_prior : bool
        Whether the prior is a Normal distribution (the study's premise).
    prior_name : str
        Class name of the prior distribution.
    """

    name: str
    transform: Any
    shape: torch.Size
    unconstrained_shape: torch.Size
    batch_dims: int
    offset: int
    is_normal_prior: bool
    prior_name: str

    @property
    def size(self) -> int:
        return math.prod(self.unconstrained_shape)

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.size)

    @property
    def variable_name(self) -> str:
        """The site's name in unconstrained space, e.g. ``"tau (log)"`` (ArviZ variable name)."""
        label = transform_label(self.transform)
        return f"{self.name} ({label})" if label else self.name

    def element_names(self) -> list[str]:
        """One name per flat element, as ArviZ's summary writes them: ``"w[0, 1]"``."""
        if len(self.unconstrained_shape) == 0:
            return [self.variable_name]
        ranges = [range(n) for n in self.unconstrained_shape]
        return [
            f"{self.variable_name}[{', '.join(str(i) for i in index)}]"
            for index in itertools.product(*ranges)
        ]


def _base_distribution(fn):
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def _discrete_site(name: str, fn) -> ModelScopeError:
    return ModelScopeError(
        f"latent site {name!r} is discrete ({type(_base_distribution(fn)).__name__}); "
        "the study needs continuous latents (marginalise it or observe it)"
    )


def _refusing_discrete(init_loc_fn):
    """``init_loc_fn`` that raises ``ModelScopeError`` for a discrete latent site.

    Without it the init strategy meets the discrete site first and Pyro raises a
    ``ValueError`` about enumeration, which is not a scope error.
    """

    def init(site=None):
        if site is None:
            return init
        if site["fn"].support.is_discrete:
            raise _discrete_site(site["name"], site["fn"])
        return init_loc_fn(site)

    return init


class FlatJoint:
    """``log p(z, y)`` of a Pyro model over the flat unconstrained latent vector ``z``.

    Parameters
    ----------
    model : callable
        Pyro model, called as ``model(**data)``.
    data : mapping
        Keyword arguments of the model, observations included.
    init_loc_fn : callable, optional
        Pyro init strategy of the start point (default: ``z = 0``).
    memory_budget : int
        Bytes an exact Hessian may add to the process while it is built (``hessian_chunk``).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        data: Mapping[str, Any],
        init_loc_fn: Callable[..., Any] | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ):
        self.model = model
        self.memory_budget = int(memory_budget)
        # Bytes of one Hessian-vector product, measured at the first one (``hvp_at``).
        self.hvp_bytes: int | None = None
        self.last_hessian_chunk: int | None = None
        self.data = dict(data)
        # The prototype trace fixes the sites, their shapes and the default start
        # point; an init strategy (not the prior) supplies the values, so improper
        # priors such as ImproperUniform, which cannot be sampled, are fine.
        init = InitMessenger(_refusing_discrete(init_loc_fn or init_to_unconstrained_zero))
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(init(model)).get_trace(**self.data)
        self.max_plate_nesting = max(
            [-frame.dim for site in trace.nodes.values() if site["type"] == "sample"
             for frame in site["cond_indep_stack"] if frame.vectorized] + [0]
        )
        self.sites: list[LatentSite] = []
        self.observed_sites: list[str] = []
        offset = 0
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["infer"].get("is_auxiliary"):
                continue
            if site_is_subsample(site):
                continue
            if site["is_observed"]:
                self.observed_sites.append(name)
                continue
            fn = site["fn"]
            if fn.support.is_discrete:
                raise _discrete_site(name, fn)
            transform = biject_to(fn.support)
            value = site["value"]
            unconstrained = transform.inv(value)
            base = _base_distribution(fn)
            latent = LatentSite(
                name=name,
                transform=transform,
                shape=value.shape,
                unconstrained_shape=unconstrained.shape,
                batch_dims=len(fn.batch_shape),
                offset=offset,
                is_normal_prior=isinstance(base, dist.Normal),
                prior_name=type(base).__name__,
            )
            self.sites.append(latent)
            offset += latent.size
        if not self.sites:
            raise ModelScopeError("the model has no latent sample site")
        self.dim = offset
        self.init_z = torch.cat(
            [s.transform.inv(trace.nodes[s.name]["value"]).reshape(-1) for s in self.sites]
        ).detach()
        self.param_names: list[str] = [n for s in self.sites for n in s.element_names()]
        self.dtype = self.init_z.dtype
        _unused = (
            (site["value"].dtype for site in trace.nodes.values()
             if site["type"] == "sample" and torch.is_floating_point(site["value"])),
            torch.get_default_dtype(),
        )

    # -- flat <-> sites ---------------------------------------------------------------

    def site(self, name: str) -> LatentSite:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def _constrain(self, z: torch.Tensor, batch: int | None):
        """Constrained site values and the summed log |det dx/dz|.

        ``batch=None``: ``z`` has shape ``(d,)``; else ``(batch, d)`` and every value
        gets the particle dimension to the left of the model's plates.
        """
        values: dict[str, torch.Tensor] = {}
        log_det = z.new_zeros(() if batch is None else (batch,))
        for s in self.sites:
            piece = z[..., s.slice]
            if batch is None:
                u = piece.reshape(s.unconstrained_shape)
            else:
                pad = (1,) * (self.max_plate_nesting - s.batch_dims)
                u = piece.reshape((batch,) + pad + tuple(s.unconstrained_shape))
            x = s.transform(u)
            values[s.name] = x
            ladj = s.transform.log_abs_det_jacobian(u, x)
            if batch is None:
                log_det = log_det + ladj.sum()
            else:
                log_det = log_det + ladj.reshape(batch, -1).sum(-1)
        return values, log_det

    def constrain(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Site values on the constrained scale.

        Parameters
        ----------
        z : torch.Tensor
            Shape ``(d,)`` or ``(S, d)``.

        Returns
        -------
        dict[str, torch.Tensor]
            Shapes ``site.shape`` or ``(S, *site.shape)``.
        """
        if z.dim() == 1:
            return {s.name: s.transform(z[s.slice].reshape(s.unconstrained_shape)) for s in self.sites}
        S = z.shape[0]
        return {
            s.name: s.transform(z[:, s.slice].reshape((S,) + tuple(s.unconstrained_shape)))
            for s in self.sites
        }

    def unconstrain(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Flatten constrained site values into ``z``.

        Parameters
        ----------
        values : mapping
            Site name -> tensor of shape ``(S, *site.shape)``.

        Returns
        -------
        torch.Tensor
            Shape ``(S, d)``.
        """
        pieces = []
        for s in self.sites:
            x = torch.as_tensor(values[s.name], dtype=self.dtype)
            S = x.shape[0]
            pieces.append(s.transform.inv(x).reshape(S, s.size))
        return torch.cat(pieces, dim=-1)

    # -- the log joint -----------------------------------------------------------------

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z, y)`` at one point, through a plain (unvectorised) model call.

        Parameters
        ----------
        z : torch.Tensor
            Shape ``(d,)``.

        Returns
        -------
        torch.Tensor
            Scalar.
        """
        values, log_det = self._constrain(z, None)
        trace = poutine.trace(poutine.condition(self.model, data=values)).get_trace(**self.data)
        return trace.log_prob_sum() + log_det

    def site_log_probs(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-site log densities for a batch, via the vectorised-particle path.

        Parameters
        ----------
        z : torch.Tensor
            Shape ``(S, d)``.

        Returns
        -------
        dict[str, torch.Tensor]
            Site name -> the site's raw ``log_prob`` tensor (for shape checks),
            plus ``"__log_det__"`` -> shape ``(S,)``.
        """
        S = z.shape[0]
        values, log_det = self._constrain(z, S)
        particle_dim = -(self.max_plate_nesting + 1)

        def vectorised(**kwargs):
            with pyro.plate("_particles", S, dim=particle_dim):
                return self.model(**kwargs)

        trace = poutine.trace(poutine.condition(vectorised, data=values)).get_trace(**self.data)
        trace.compute_log_prob()
        out = {
            name: site["log_prob"]
            for name, site in trace.nodes.items()
            if site["type"] == "sample"
            # pyro.factor marks its (observed) site auxiliary; it is part of the log joint.
            and (site["is_observed"] or not site["infer"].get("is_auxiliary"))
            and not site_is_subsample(site)
        }
        out["__log_det__"] = log_det
        return out

    def log_joint_batched(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z_s, y)`` for a batch, through the vectorised-particle path Pyro's ELBO uses.

        Parameters
        ----------
        z : torch.Tensor
            Shape ``(S, d)``.

        Returns
        -------
        torch.Tensor
            Shape ``(S,)``.
        """
        S = z.shape[0]
        per_site = self.site_log_probs(z)
        total = per_site.pop("__log_det__")
        for name, lp in per_site.items():
            if lp.dim() == 0 or lp.shape[0] != S:
                raise ShapeMismatchError(
                    f"site {name!r}: log_prob has shape {tuple(lp.shape)} under {S} vectorised "
                    f"particles; expected a leading particle dimension of size {S}"
                )
            total = total + lp.reshape(S, -1).sum(-1)
        return total

    # -- derivatives ---------------------------------------------------------------------

    def potential_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``U(z) = -log p(z, y)`` and its gradient at one point."""
        z = z.detach().requires_grad_(True)
        potential = -self.log_joint(z)
        (grad,) = torch.autograd.grad(potential, z)
        return potential.detach(), grad

    def hvp_at(self, z: torch.Tensor):
        """``U(z)``, its gradient and the Hessian-vector product ``v -> H v`` at one point.

        ``hvp(v)`` takes ``v`` of shape ``(d,)``, or ``(k, d)`` with ``batched=True`` (one
        vectorised backward pass for the ``k`` products, ``H v_j`` in row ``j``). The first
        products of a joint are counted (``study.core.memory.LiveBytes``): their bytes per
        product set how many later passes batch (``hessian_chunk``).
        """
        z = z.detach().requires_grad_(True)
        potential = -self.log_joint(z)
        (grad,) = torch.autograd.grad(potential, z, create_graph=True)

        def hvp(v: torch.Tensor, batched: bool = False) -> torch.Tensor:
            if self.hvp_bytes is not None:
                return torch.autograd.grad(grad, z, v, retain_graph=True, is_grads_batched=batched)[0]
            with LiveBytes() as live:
                out = torch.autograd.grad(grad, z, v, retain_graph=True, is_grads_batched=batched)[0]
            self.hvp_bytes = max(1, math.ceil(live.peak / (v.shape[0] if batched else 1)))
            return out

        return potential.detach(), grad.detach(), hvp

    def hessian_chunk(self) -> int:
        """Hessian-vector products per batched pass within ``memory_budget`` (at least one).

        The budget holds what building a Hessian adds to the process: the ``d x d`` result
        with its symmetrisation (three ``d x d`` arrays) and ``k`` products at their
        measured bytes each (``hvp_bytes``), eight times over (``HEAP_SLACK``). Which rows
        share a pass changes the result by rounding at most (2e-16 of its largest entry
        over the default models; no bit on a linear model, tested). What the process held
        before is not counted: ``import torch`` alone holds 0.74 GB of a CUDA build's
        libraries, on a CPU too.
        """
        if self.hvp_bytes is None:
            raise RuntimeError("hessian_chunk before any Hessian-vector product was measured")
        held = 3 * self.dim * self.dim * self.init_z.element_size()
        per_product = HEAP_SLACK * self.hvp_bytes
        return int(max(1, min(self.dim, (self.memory_budget - held) // per_product)))

    def hessian(self, z: torch.Tensor, hvp=None) -> torch.Tensor:
        """Exact Hessian of ``U(z) = -log p(z, y)`` at one point, shape ``(d, d)``.

        Built from the gradient by Hessian-vector products with the unit vectors, as many
        per vectorised backward pass (``torch.autograd.grad(..., is_grads_batched=True)``)
        as ``memory_budget`` allows at the measured bytes of one product
        (``hessian_chunk``), then symmetrised. A model whose backward pass cannot be
        vectorised gets one pass per row. A model that broadcasts its data against the
        weights (``(X * w).sum(-1)``) holds an ``N x d`` temporary per product: at
        ``N = 3,000``, ``d = 2,000`` the former fixed 256 products per pass held 12 GB.
        ``hvp``: the products at ``z`` from ``hvp_at(z)``, where the caller has them already.
        """
        if hvp is None:
            _, _, hvp = self.hvp_at(z)
        d = self.dim
        H = torch.empty((d, d), dtype=z.dtype)

        def rows(a: int, b: int) -> torch.Tensor:
            units = torch.zeros((b - a, d), dtype=z.dtype)
            units[:, a:b].fill_diagonal_(1.0)
            return hvp(units, batched=True)

        try:
            a = 0
            if self.hvp_bytes is None:  # the first pass measures the bytes of a product
                a = min(HESSIAN_PROBE_ROWS, d)
                H[:a] = rows(0, a)
            chunk = self.last_hessian_chunk = self.hessian_chunk()
            with large_blocks_from_heap(chunk * self.hvp_bytes):
                while a < d:
                    b = min(a + chunk, d)
                    H[a:b] = rows(a, b)
                    a = b
        except RuntimeError:  # vmap cannot run some backward: one pass per row
            self.last_hessian_chunk = 1
            for i in range(d):
                H[i] = hvp(torch.eye(1, d, i, dtype=z.dtype)[0])
        return 0.5 * (H + H.T)

    def hessian_diagonal_batched(self, z: torch.Tensor) -> torch.Tensor:
        """Exact diagonal of the Hessian of ``U`` at each of ``S`` points, shape ``(S, d)``.

        ``sum_s U(z_s)`` has a block-diagonal Hessian, so one Hessian-vector product
        with the unit vector ``e_i`` repeated over the batch gives ``H_ii`` at every
        point at once: ``d`` backward passes in all, never a dense ``d x d`` matrix.
        """
        z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(-self.log_joint_batched(z).sum(), z, create_graph=True)
        diag = torch.empty_like(z)
        for i in range(self.dim):
            (column,) = torch.autograd.grad(grad[:, i].sum(), z, retain_graph=True)
            diag[:, i] = column[:, i]
        return diag.detach()
