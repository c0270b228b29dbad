"""A small Bayesian MLP (a ``PyroModule``) on a 1-D regression data set.

```
x_n   ~ Uniform(-2, 2),  y_n = sin(2 x_n) + 0.2 eps_n     n = 1..80 (fixed, seed 2)
W1 ~ N(0, 1)^{10x1}, b1 ~ N(0, 1)^10, W2 ~ N(0, 1)^{1x10}, b2 ~ N(0, 1)
f(x)  = W2 tanh(W1 x + b1) + b2
y_n   ~ Normal(f(x_n), 0.2)                                 known noise
```

31 weights. The posterior is multimodal (hidden units can be permuted and
sign-flipped), so the NUTS reference describes all modes while mean-field SVI
and Laplace describe one; the study starts the MAP search from the mean-field
mean so that Laplace describes the same mode as the mean-field fit.
laplace-torch uses the generalised Gauss-Newton matrix (its default for
networks), not the exact Hessian.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import init_to_sample
from pyro.nn import PyroModule, PyroSample

from models import ModelSpec
from models._contract import LaplaceTorchProblem

HIDDEN = 10
PRIOR_SCALE = 1.0
NOISE_SCALE = 0.2


def _dense(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``h W^T + b`` that broadcasts over vectorised particles.

    ``h``: ``(..., N, in)``; ``weight``: ``(..., out, in)``; ``bias``: ``(..., out)``.
    Elementwise product and sum instead of ``matmul``: a matmul would make the
    particle dimension a second batch dimension of the data plate.
    """
    return (h.unsqueeze(-2) * weight).sum(-1) + bias


class BayesianMLP(PyroModule):
    """1 -> HIDDEN (tanh) -> 1 with N(0, PRIOR_SCALE^2) priors on every weight."""

    def __init__(self, hidden: int = HIDDEN, prior_scale: float = PRIOR_SCALE):
        super().__init__()
        zero = torch.zeros((), dtype=torch.float64)
        prior = dist.Normal(zero, prior_scale)
        self.w1 = PyroSample(prior.expand([hidden, 1]).to_event(2))
        self.b1 = PyroSample(prior.expand([hidden]).to_event(1))
        self.w2 = PyroSample(prior.expand([1, hidden]).to_event(2))
        self.b2 = PyroSample(prior.expand([1]).to_event(1))

    def forward(self, x, y=None):
        hidden = torch.tanh(_dense(x, self.w1, self.b1))
        mean = _dense(hidden, self.w2, self.b2).squeeze(-1)
        with pyro.plate("data", x.shape[-2]):
            pyro.sample("y", dist.Normal(mean, NOISE_SCALE), obs=y)
        return mean


model = BayesianMLP()


def data():
    rng = np.random.default_rng(2)
    x = rng.uniform(-2.0, 2.0, size=(80, 1))
    y = np.sin(2.0 * x[:, 0]) + NOISE_SCALE * rng.standard_normal(80)
    return {"x": torch.tensor(x), "y": torch.tensor(y)}


def laplace_torch(d):
    module = torch.nn.Sequential(
        torch.nn.Linear(1, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1)
    )
    return LaplaceTorchProblem(
        module=module,
        likelihood="regression",
        inputs=d["x"],
        targets=d["y"][:, None],
        site_of_parameter={"0.weight": "w1", "0.bias": "b1", "2.weight": "w2", "2.bias": "b2"},
        prior_precision=1.0 / PRIOR_SCALE**2,
        sigma_noise=NOISE_SCALE,
    )


SPEC = ModelSpec(
    name="bnn_regression",
    pretty_name="Bayesian MLP (1-10-1, tanh), 1-D regression",
    model=model,
    data=data,
    laplace_torch=laplace_torch,
    init_loc_fn=init_to_sample,
    svi_steps_scale=2.0,
    # NUTS cannot mix across the permutation/sign modes of a network in any affordable run
    # (measured: R-hat 2.2 and bulk ESS 2.6 with depth 5 and 2 x 1000 iterations, 142 s;
    # R-hat 2.5 with depth 4 and 2 x 1000, 80 s): the study left it out of every pooled
    # number, so it no longer runs. `nuts_max_tree_depth` stays for `--model` copies that
    # drop `no_reference`.
    nuts_max_tree_depth=4,
    no_reference=(
        "NUTS does not mix across the network's permutation and sign-flip modes (measured: "
        "largest R-hat 2.5, smallest bulk ESS 2.4 after 2 x 1000 iterations, about 80 s)"
    ),
)
