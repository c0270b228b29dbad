"""A deliberately broken model: correct for one sample, wrong under vectorised particles.

```
x_n ~ N(0, 1)^3,  w ~ N(0, 1)^3,  y_n ~ N(x_n . w, 0.5)     n = 1..50
```

The mean is written ``X @ w.unsqueeze(-1)``. For one sample ``w`` has shape
``(3,)`` and the mean ``(50,)``, as it should. Under ``S`` vectorised particles
``w`` has shape ``(S, 1, 3)``, the mean becomes ``(S, 1, 50)``, and the
particle plate broadcasts it to ``(S, S, 50)``: every particle's likelihood is
summed over all ``S`` particles' weights. The shape check must stop it.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), 1.0).to_event(1))
    with pyro.plate("data", X.shape[-2]):
        mean = (X @ w.unsqueeze(-1)).squeeze(-1)  # the slip: fine per sample, wrong per particle batch
        pyro.sample("y", dist.Normal(mean, 0.5), obs=y)


def data():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 3))
    y = X @ np.array([1.0, -0.5, 0.25]) + 0.5 * rng.standard_normal(50)
    return {"X": torch.tensor(X), "y": torch.tensor(y)}


SPEC = ModelSpec(name="misbroadcast_linear", model=model, data=data)
