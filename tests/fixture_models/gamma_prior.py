"""Unknown noise with a Gamma prior on its sd: runs, but outside the question's Gaussian premise.

```
mu    ~ Normal(0, 1)
sigma ~ Gamma(2, 2)              not Gaussian: flagged in the report
y_n   ~ Normal(mu, sigma)        n = 1..20
```
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    sigma = pyro.sample("sigma", dist.Gamma(torch.tensor(2.0, dtype=y.dtype), 2.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def data():
    rng = np.random.default_rng(3)
    return {"y": torch.tensor(0.5 + 0.8 * rng.standard_normal(20))}


SPEC = ModelSpec(name="gamma_prior", model=model, data=data)
