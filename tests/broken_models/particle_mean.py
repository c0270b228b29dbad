"""A deliberately broken model whose shapes are right but whose values mix particles.

```
x_n ~ N(0, 1)^3,  w ~ N(0, 1)^3,  y_n ~ N(x_n . w + mean(w), 0.5)     n = 1..50
```

``w.mean()`` is the mean of the three weights for one sample, but under
vectorised particles it averages over every particle's weights too: each
log-likelihood has the right shape and the wrong value. The shape check must
stop it by comparing values.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), 1.0).to_event(1))
    with pyro.plate("data", X.shape[-2]):
        mean = (X * w).sum(-1) + w.mean()  # the slip: should be w.mean(-1, keepdim=True)
        pyro.sample("y", dist.Normal(mean, 0.5), obs=y)


def data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 3))
    y = X @ np.array([1.0, -0.5, 0.25]) + 0.5 * rng.standard_normal(50)
    return {"X": torch.tensor(X), "y": torch.tensor(y)}


SPEC = ModelSpec(name="particle_mean", model=model, data=data)
