"""The seed experiment: one slope, known noise, a Gaussian prior.

```
x_n   ~ Uniform(-1, 1)                      n = 1..100   (fixed, seed 0)
beta  ~ Normal(0, 1)
y_n   ~ Normal(beta * x_n, 0.5)             true beta = 2
```

Conjugate, so the posterior of ``beta`` is Gaussian with precision
``Lambda = 1 + sum_n x_n^2 / 0.5^2``: mean-field is exact here, and
``sigma = 1/sqrt(Lambda)`` is what every method should find. The question's
seed: train the same ``(mu, log sigma)`` on the expected loss alone and
``sigma`` collapses to 0.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._glm import conjugate_linear_posterior
from models._contract import LaplaceTorchProblem

PRIOR_SCALE = 1.0
NOISE_SCALE = 0.5


def model(x, y):
    beta = pyro.sample("beta", dist.Normal(torch.zeros((), dtype=x.dtype), PRIOR_SCALE))
    with pyro.plate("data", x.shape[-1]):
        pyro.sample("y", dist.Normal(beta * x, NOISE_SCALE), obs=y)


def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=100)
    y = 2.0 * x + NOISE_SCALE * rng.standard_normal(100)
    return {"x": torch.tensor(x), "y": torch.tensor(y)}


def exact_posterior(d):
    return conjugate_linear_posterior(d["x"][:, None], d["y"], PRIOR_SCALE, NOISE_SCALE)


def laplace_torch(d):
    return LaplaceTorchProblem(
        module=torch.nn.Linear(1, 1, bias=False),
        likelihood="regression",
        inputs=d["x"][:, None],
        targets=d["y"][:, None],
        site_of_parameter={"weight": "beta"},
        prior_precision=1.0 / PRIOR_SCALE**2,
        sigma_noise=NOISE_SCALE,
    )


SPEC = ModelSpec(
    name="seed_linear",
    pretty_name="Seed: 1-D linear, known noise",
    model=model,
    data=data,
    exact_posterior=exact_posterior,
    laplace_torch=laplace_torch,
)
