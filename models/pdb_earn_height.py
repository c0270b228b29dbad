"""posteriordb ``earnings-earn_height``: linear regression of earnings (dollars) on height (Gelman & Hill 2007, ch. 4).

```
beta  ~ flat on R^2                  (Stan: no prior statement; improper, flagged in the report)
sigma ~ flat on (0, inf)              (improper)
earn ~ normal(beta_1 + beta_2 height, sigma)
```

1192 respondents of the 1990 Work, Family, and Well-Being survey. The design
matrix (intercept column first) is built in ``data()``, like Stan's transformed data.
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws, stack_indexed
from models._stan import flat

POSTERIOR = "earnings-earn_height"


def model(X, y):
    beta = pyro.sample("beta", flat(constraints.real, X.shape[-1:]))
    sigma = pyro.sample("sigma", flat(constraints.positive))
    with pyro.plate("people", X.shape[-2]):
        # (X * beta).sum(-1), not X @ beta: beta carries the particle dimension.
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)


def data():
    raw = load_data(POSTERIOR)
    earn = torch.tensor(raw["earn"], dtype=torch.float64)
    height = torch.tensor(raw["height"], dtype=torch.float64)
    X = torch.stack([torch.ones_like(height), height], dim=-1)
    return {"X": X, "y": earn}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {"beta": torch.tensor(stack_indexed(draws, "beta", d["X"].shape[-1])), "sigma": torch.tensor(draws["sigma"])}


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb earnings: earnings (dollars) on height",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
