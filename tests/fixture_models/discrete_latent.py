"""A two-component mixture with its discrete assignment left as a latent site.

```
z ~ Bernoulli(0.5)          discrete: outside the study's scope
mu ~ Normal(0, 1)
y_n ~ Normal(mu + 3 z, 1)
```
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(y):
    z = pyro.sample("z", dist.Bernoulli(torch.tensor(0.5, dtype=y.dtype)))
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu + 3.0 * z, 1.0), obs=y)


def data():
    return {"y": torch.tensor([2.9, 3.4, 2.6], dtype=torch.float64)}


SPEC = ModelSpec(name="discrete_latent", model=model, data=data)
