"""A regression whose weight vector has the wrong length: the model raises whenever it runs.

```
w   ~ Normal(0, 1)^2             but X has 3 columns
y_n ~ Normal(X_n . w, 1)
```
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=X.dtype), 1.0).to_event(1))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Normal((X * w).sum(-1), 1.0), obs=y)


def data():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 3))
    return {"X": torch.tensor(X), "y": torch.tensor(X.sum(1))}


SPEC = ModelSpec(name="model_raises", model=model, data=data)
