"""posteriordb ``low_dim_gauss_mix-low_dim_gauss_mix``: a two-component Gaussian mixture.

```
mu      : ordered (mu_1 < mu_2),  mu_k ~ normal(0, 2)     (identifies the components)
sigma_k ~ half-normal(0, 2)          k = 1, 2
theta   ~ beta(5, 5)                 (not Gaussian: flagged in the report)
y_n     ~ theta normal(mu_1, sigma_1) + (1 - theta) normal(mu_2, sigma_2)   n = 1..1000
```

The component of each observation is summed out (``log_mix`` in Stan, ``NormalMix2``
here). ``mu``'s prior is Stan's ``normal(0, 2)`` on an ordered vector,
i.e. two normal densities restricted to ``mu_1 < mu_2`` (``ordered_normal``, unnormalised
as in Stan). Its unconstrained coordinates are ``mu_1`` and ``log(mu_2 - mu_1)``.
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws, stack_indexed
from models._stan import NormalMix2, ordered_normal

POSTERIOR = "low_dim_gauss_mix-low_dim_gauss_mix"


def model(y):
    zero = torch.zeros((), dtype=y.dtype)
    mu = pyro.sample("mu", ordered_normal(torch.zeros(2, dtype=y.dtype), 2.0, positive=False))
    sigma = pyro.sample("sigma", dist.HalfNormal(zero + 2.0).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(zero + 5.0, zero + 5.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", NormalMix2(theta, mu, sigma), obs=y)


def data():
    return {"y": torch.tensor(load_data(POSTERIOR)["y"], dtype=torch.float64)}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {
        "mu": torch.tensor(stack_indexed(draws, "mu", 2)),
        "sigma": torch.tensor(stack_indexed(draws, "sigma", 2)),
        "theta": torch.tensor(draws["theta"]),
    }


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb low-dimensional Gaussian mixture",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
