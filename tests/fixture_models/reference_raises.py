"""Conjugate linear regression whose ``exact_posterior`` asks for a data key that is not there.

```
w   ~ Normal(0, 1)^2
y_n ~ Normal(x_n . w, 1)
```

Every method but ``reference`` works; ``reference`` raises ``KeyError: 'X'``.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import GaussianPosterior, ModelSpec


def model(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[-2]):
        pyro.sample("y", dist.Normal((x * w).sum(-1), 1.0), obs=y)


def data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 2))
    return {"x": torch.tensor(x), "y": torch.tensor(x @ np.array([1.0, -0.5]) + rng.standard_normal(30))}


def exact_posterior(d):
    X = d["X"]  # the data key is "x": this raises KeyError
    precision = X.T @ X + torch.eye(2, dtype=X.dtype)
    covariance = torch.linalg.inv(precision)
    return GaussianPosterior(mean=covariance @ X.T @ d["y"], covariance=covariance)


SPEC = ModelSpec(name="reference_raises", model=model, data=data, exact_posterior=exact_posterior)
