"""Linear regression with Stan's implicit priors: flat on the coefficients and on the noise sd.

```
beta  ~ flat on R^2                  (improper, no prior statement in Stan)
sigma ~ flat on (0, inf)             (improper)
y_n   ~ Normal(x_n . beta, sigma)    n = 1..30
```

The posterior is proper (30 observations, 2 coefficients). Every method must
handle priors that cannot be sampled: the MAP start, the guides, Laplace, NUTS
and the shape check; the report flags them as non-Gaussian.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models import ModelSpec


def model(X, y):
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (X.shape[-1],)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)


def data():
    rng = np.random.default_rng(5)
    X = np.column_stack([np.ones(30), rng.standard_normal(30)])
    return {"X": torch.tensor(X), "y": torch.tensor(X @ [1.0, -0.5] + 0.7 * rng.standard_normal(30))}


SPEC = ModelSpec(name="flat_priors", model=model, data=data)
