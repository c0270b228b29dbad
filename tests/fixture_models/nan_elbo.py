"""A Poisson rate given a Normal prior: its log goes NaN when a draw of the rate is negative.

```
rate ~ Normal(1, 1)                            should have been positive (e.g. LogNormal)
y_n  ~ Poisson(rate), as y_n log(rate) - rate  n = 1..10, counts with mean 0.3
```

The MAP (rate ~ 0.3) and its Hessian are fine, so the Laplace methods work; the
ELBO's Gaussian draws of the rate reach below 0 and the loss turns NaN.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide.initialization import init_to_value

from models import ModelSpec


def model(y):
    rate = pyro.sample("rate", dist.Normal(torch.ones((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.factor("poisson", y * torch.log(rate) - rate)


def data():
    return {"y": torch.tensor([0, 1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=torch.float64)}


SPEC = ModelSpec(
    name="nan_elbo",
    model=model,
    data=data,
    init_loc_fn=init_to_value(values={"rate": torch.tensor(1.0, dtype=torch.float64)}),
)
