"""A sign-unidentified model: y depends on beta only through beta squared.

```
beta ~ Normal(0, 1)
y_n  ~ Normal(beta^2, 1)         n = 1..20, y around 4: modes at beta = +-2
```

The MAP search starts at beta = 0, where the gradient is exactly 0 by symmetry,
and stays there; the log density has a local minimum there, so the Hessian of
``-log p`` has a negative eigenvalue (1 - 2 sum(y) ~ -160): no Laplace approximation.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(y):
    beta = pyro.sample("beta", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(beta**2, 1.0), obs=y)


def data():
    rng = np.random.default_rng(6)
    return {"y": torch.tensor(4.0 + rng.standard_normal(20))}


SPEC = ModelSpec(name="saddle_hessian", model=model, data=data)
