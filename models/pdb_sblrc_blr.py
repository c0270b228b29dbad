"""posteriordb ``sblrc-blr``: Bayesian linear regression, correlated design.

```
X     : 100 x 5 synthetic design, columns correlated (entries O(100)), no intercept
beta  ~ normal(0, 10)^5
sigma ~ half-normal(0, 10)
y     ~ normal(X beta, sigma)
```

Reference: posteriordb's 10,000 gold draws (Stan, 10 chains). ``sigma`` is
compared as ``sigma (log)``, where the guide lives. Near-Gaussian: Laplace
should match the gold draws.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws, stack_indexed

POSTERIOR = "sblrc-blr"


def model(X, y):
    zero = torch.zeros(X.shape[-1], dtype=X.dtype)
    beta = pyro.sample("beta", dist.Normal(zero, 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(10.0, dtype=X.dtype)))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Normal((X * beta).sum(-1), sigma), obs=y)


def data():
    raw = load_data(POSTERIOR)
    return {"X": torch.tensor(raw["X"], dtype=torch.float64), "y": torch.tensor(raw["y"], dtype=torch.float64)}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {
        "beta": torch.tensor(stack_indexed(draws, "beta", d["X"].shape[-1])),
        "sigma": torch.tensor(draws["sigma"]),
    }


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb sblrc-blr (linear regression)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
    svi_steps_scale=2.0,  # coefficients' sd ~5e-4 next to sigma's 0.07: sigma needs the longer run
)
