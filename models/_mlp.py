"""Bayesian multilayer perceptrons: one ``torch.nn.Module``, lifted into Pyro.

A network is written once, as a plain ``nn.Sequential`` of ``nn.Linear`` and
``nn.Tanh`` layers (``make_mlp``). The Pyro model (``NetworkModel``) samples one
latent site per module parameter, with an isotropic Gaussian prior, and
evaluates the *same* module with those weights through
``torch.func.functional_call`` (one weight set: its layers applied one by one, the
same operations, so that it can be traced; ``_layer_by_layer``); laplace-torch gets
the same module through the model's ``laplace_torch`` field
(``NetworkModel.laplace_torch``). So the Pyro posterior and laplace-torch's
posterior are over the same function.

Vectorised particles
--------------------
Pyro's ELBO draws global latents with batch shape ``(particles, 1)``: the
particle dimension sits to the left of the data plate, the trailing ``1``
lines up with it. ``functional_call`` runs the module on one weight set; the
particles are mapped over with ``torch.func.vmap`` (a batched matrix product,
never an ``(N, inputs, hidden)`` broadcast), and the size-1 plate-padding
dimension is squeezed out of the outputs so that they broadcast against the
data plate.

Prior
-----
``w ~ Normal(0, 1/prior_precision)`` for every weight and bias (the isotropic
Gaussian prior laplace-torch assumes, ``prior_precision`` the same number).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ._contract import LaplaceTorchProblem

CLASSIFICATION, REGRESSION = "classification", "regression"


def make_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]) -> Tanh -> ... -> Linear(sizes[-2], sizes[-1])``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, inputs first, outputs last; at least two entries.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output width, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def weight_count(sizes: Sequence[int]) -> int:
    """Number of weights and biases of ``make_mlp(sizes)``."""
    return sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def site_names(module: nn.Module) -> dict[str, str]:
    """Module parameter name -> latent site name: ``"0.weight"`` -> ``"W1"``, ``"2.bias"`` -> ``"b2"``."""
    names = {}
    layer = 0
    for name, _ in module.named_parameters():
        prefix, kind = name.rsplit(".", 1)
        if kind == "weight":
            layer += 1
        names[name] = f"{'W' if kind == 'weight' else 'b'}{layer}"
    return names


def apply_module(module: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the parameters ``params``, mapped over leading particle dimensions.

    Parameters
    ----------
    module : nn.Module
        The network; its own parameter values are not used.
    params : dict[str, torch.Tensor]
        Module parameter name -> tensor of shape ``batch + param.shape``, the same
        ``batch`` for every parameter: ``()`` for one weight set, or Pyro's
        vectorised-particle shape ``(particles, 1)``.
    x : torch.Tensor
        Shape ``(N, inputs)``.

    Returns
    -------
    torch.Tensor
        ``(N, outputs)`` for ``batch = ()``; ``(particles, N, outputs)`` for
        ``batch = (particles, 1)`` (the size-1 dimension that lines up with the
        data plate is dropped), so that the outputs broadcast against the plate.
    """
    shapes = dict(module.named_parameters())
    first = next(iter(params))
    batch = params[first].shape[: params[first].dim() - shapes[first].dim()]
    if len(batch) == 0:
        return _layer_by_layer(module, params, x)
    if batch[-1] != 1:
        raise ValueError(
            f"network weights have batch shape {tuple(batch)}; expected () or (particles, 1), "
            "the trailing 1 lining up with the data plate"
        )
    flat = math.prod(batch)
    flat_params = {k: v.reshape((flat,) + tuple(shapes[k].shape)) for k, v in params.items()}
    out = torch.func.vmap(lambda p: torch.func.functional_call(module, p, (x,)))(flat_params)
    return out.reshape(tuple(batch[:-1]) + tuple(out.shape[-2:]))


def _layer_by_layer(module: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``functional_call(module, params, (x,))`` for one weight set, written out layer by layer.

    For a ``make_mlp`` network (an ``nn.Sequential`` of ``nn.Linear`` and parameter-free
    layers) it runs the operations ``functional_call`` runs, ``F.linear`` then the
    activation, so the two agree bit for bit (tested). Unlike ``functional_call`` it can be
    traced (``torch.jit.trace`` refuses the stateless API), which the MAP search does
    (``study.core.jit.exact_trace``): 0.91 ms against 2.08 ms per gradient of ``-log p`` on
    the 961-weight network. Any other module goes through ``functional_call``.

    The batched path of ``apply_module`` keeps ``vmap(functional_call)``: so the ELBO of a
    network stays untraceable and eager, as its fits were computed. Traced, its
    8-particle gradient took as long (5.4 ms against 5.2 ms on the 961-weight network).
    """
    if not isinstance(module, nn.Sequential) or any(
        not isinstance(layer, nn.Linear) and next(layer.parameters(), None) is not None for layer in module
    ):
        return torch.func.functional_call(module, params, (x,))
    for name, layer in module.named_children():
        if isinstance(layer, nn.Linear):
            x = F.linear(x, params[f"{name}.weight"], params.get(f"{name}.bias"))
        else:
            x = layer(x)
    return x


class NetworkModel:
    """A Bayesian MLP as a Pyro model, called as ``model(X, y)``.

    ```
    W_l, b_l ~ Normal(0, 1/prior_precision)          every weight and bias
    f(x)     = module(x)                              make_mlp(sizes), tanh hidden layers
    y_n      ~ Categorical(logits=f(x_n))             classification
    y_n      ~ Normal(f(x_n), noise_scale)            regression (known noise)
    ```

    Parameters
    ----------
    sizes : sequence of int
        Layer widths (``make_mlp``).
    likelihood : str
        ``"classification"`` or ``"regression"``.
    prior_precision : float
        Precision of the Gaussian prior on every weight.
    noise_scale : float
        Observation noise sd (regression only).

    Usage::

        model = NetworkModel([64, 16, 10], "classification", prior_precision=1.0)
        model(X, y)                      # X: (N, 64) float64, y: (N,) int64
    """

    def __init__(self, sizes: Sequence[int], likelihood: str, prior_precision: float = 1.0,
                 noise_scale: float = 1.0):
        if likelihood not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"likelihood must be {CLASSIFICATION!r} or {REGRESSION!r}, got {likelihood!r}")
        self.sizes = tuple(int(s) for s in sizes)
        self.likelihood = likelihood
        self.prior_precision = float(prior_precision)
        self.noise_scale = float(noise_scale)
        # A template fixing the architecture; its parameter values are never used, so the
        # module carries no state that could leak between fits.
        self.module = make_mlp(self.sizes).to(torch.float64).requires_grad_(False)
        self.sites = site_names(self.module)

    @property
    def dim(self) -> int:
        return weight_count(self.sizes)

    def __call__(self, X: torch.Tensor, y: torch.Tensor | None = None,
                 subsample_size: int | None = None) -> torch.Tensor:
        """Sample the weights and observe ``y``; ``subsample_size`` random rows per call when given.

        With ``subsample_size`` the data plate draws that many rows and Pyro scales
        their log-likelihood by ``N / subsample_size``, an unbiased estimate of the
        full one (stochastic-gradient SVI on large networks).
        """
        prior_scale = self.prior_precision**-0.5
        params = {}
        for name, param in self.module.named_parameters():
            zero = torch.zeros(param.shape, dtype=X.dtype, device=X.device)
            params[name] = pyro.sample(
                self.sites[name], dist.Normal(zero, prior_scale).to_event(param.dim())
            )
        with pyro.plate("data", X.shape[-2], subsample_size=subsample_size, device=X.device) as rows:
            if subsample_size is not None:
                X, y = X[rows], (None if y is None else y[rows])
            out = apply_module(self.module, params, X)
            if self.likelihood == CLASSIFICATION:
                pyro.sample("y", dist.Categorical(logits=out), obs=y)
            else:
                pyro.sample("y", dist.Normal(out.squeeze(-1), self.noise_scale), obs=y)
        return out

    def log_joint_of_module(self, module: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log p(w, y)`` with the weights ``w`` held by ``module``, evaluated by the module itself.

        The independent twin of the Pyro model's log joint (a test compares them).
        """
        out = module(X)
        if self.likelihood == CLASSIFICATION:
            log_lik = torch.log_softmax(out, -1).gather(-1, y[:, None]).sum()
        else:
            resid = (y - out[:, 0]) / self.noise_scale
            log_lik = (-0.5 * resid**2 - math.log(self.noise_scale) - 0.5 * math.log(2 * math.pi)).sum()
        w = torch.nn.utils.parameters_to_vector(module.parameters())
        log_prior = (
            -0.5 * self.prior_precision * (w**2).sum()
            + 0.5 * w.numel() * (math.log(self.prior_precision) - math.log(2 * math.pi))
        )
        return log_lik + log_prior

    def laplace_torch(self, data) -> LaplaceTorchProblem:
        """The same network for laplace-torch: a fresh module, its likelihood and prior."""
        module = make_mlp(self.sizes).to(data["X"].dtype)
        targets = data["y"] if self.likelihood == CLASSIFICATION else data["y"][:, None]
        return LaplaceTorchProblem(
            module=module,
            likelihood=self.likelihood,
            inputs=data["X"],
            targets=targets,
            site_of_parameter=dict(self.sites),
            prior_precision=self.prior_precision,
            sigma_noise=self.noise_scale,
        )


def standardise(X: np.ndarray) -> np.ndarray:
    """Columns to mean 0 and sd 1; a constant column (sd 0) stays at 0."""
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)


def digits_data() -> dict[str, torch.Tensor]:
    """scikit-learn's bundled digits: ``X`` (1797, 64) standardised pixels, ``y`` (1797,) classes 0-9."""
    from models._sklearn_data import digits

    X, y = digits()
    return {"X": torch.tensor(standardise(X.astype(np.float64))), "y": torch.tensor(y, dtype=torch.long)}


def diabetes_data() -> dict[str, torch.Tensor]:
    """scikit-learn's bundled diabetes data: ``X`` (442, 10) standardised, ``y`` (442,) standardised."""
    from models._sklearn_data import diabetes

    X, y = diabetes()
    y = (y - y.mean()) / y.std()
    return {"X": torch.tensor(standardise(X)), "y": torch.tensor(y)}


# The ladder's tags: every rung is in the "networks" group; rungs tagged ON_REQUEST run only
# when selected by name or group (they are too large for the default study).
NETWORKS, ON_REQUEST = "networks", "on_request"


def network_spec(name: str, pretty_name: str, sizes: Sequence[int], likelihood: str, data,
                 data_text: str, prior_precision: float = 1.0, noise_scale: float = 1.0,
                 on_request: bool = False):
    """The ``ModelSpec`` of one rung of a network ladder.

    Parameters
    ----------
    name, pretty_name : str
        As in ``ModelSpec``.
    sizes : sequence of int
        Layer widths.
    likelihood : str
        ``"classification"`` or ``"regression"``.
    data : callable
        ``data() -> {"X": (N, sizes[0]), "y": (N,)}``.
    data_text : str
        One sentence on the data set, for the report.
    prior_precision, noise_scale : float
        As in ``NetworkModel``.
    on_request : bool
        Leave the rung out of the default study (it runs when selected).
    """
    from pyro.infer.autoguide.initialization import init_to_sample

    from ._contract import ModelSpec

    model = NetworkModel(sizes, likelihood, prior_precision, noise_scale)
    arch = "-".join(str(s) for s in sizes)
    if likelihood == CLASSIFICATION:
        lik = "y_n ~ Categorical(logits=f(x_n))"
    else:
        lik = f"y_n ~ Normal(f(x_n), {noise_scale:g})            known noise"
    description = "\n".join([
        f"A Bayesian MLP {arch} (tanh hidden layers): {model.dim:,} weights. {data_text}",
        "",
        "```",
        f"W_l, b_l ~ Normal(0, {1 / prior_precision:g})         every weight and bias (prior precision {prior_precision:g})",
        f"f(x)     = the nn.Module {arch}, tanh",
        lik,
        "```",
        "",
        "The network is one `torch.nn.Module` (`models/_mlp.py`); the Pyro model and laplace-torch",
        "evaluate the same module. The posterior is multimodal (hidden units can be permuted and",
        "sign-flipped): mean-field SVI and Laplace describe the mode the MAP search finds, from a",
        "draw of the prior (`init_to_sample`).",
    ])
    return ModelSpec(
        name=name,
        pretty_name=pretty_name,
        description=description,
        model=model,
        data=data,
        laplace_torch=model.laplace_torch,
        init_loc_fn=init_to_sample,
        # NUTS cannot mix across the permutation/sign modes of a network (see bnn_regression).
        nuts_max_tree_depth=4,
        # A network's SVI step costs in proportion to its particles (study.methods.svi.particles).
        svi_particles=8,
        # Above study.methods.svi.LARGE_MODEL_DIM weights (the 10^4 rungs and up) the mean-field
        # and IVON fits run in float32: their step is the hidden layer's matrix products.
        large_fit_dtype="float32",
        tags=(NETWORKS, ON_REQUEST) if on_request else (NETWORKS,),
    )


DIGITS_TEXT = ("scikit-learn's bundled digits: 1,797 8x8 images, 64 standardised pixels, "
               "10 classes.")
DIABETES_TEXT = ("scikit-learn's bundled diabetes data: 442 patients, 10 standardised features, "
                 "standardised disease progression; the noise sd 0.7 is about the residual sd of a "
                 "linear fit (R^2 0.52).")
