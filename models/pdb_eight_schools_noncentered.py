"""posteriordb ``eight_schools-eight_schools_noncentered``: the non-centred eight schools.

```
theta_trans_j ~ normal(0, 1)          j = 1..8
mu            ~ normal(0, 5)
tau           ~ half-Cauchy(0, 5)     (not Gaussian: flagged in the report)
theta_j       = mu + tau * theta_trans_j
y_j           ~ normal(theta_j, sigma_j)   sigma_j known
```

Reference: posteriordb's gold draws of ``theta``, ``mu``, ``tau``, mapped to
the model's latents ``theta_trans = (theta - mu) / tau`` and ``tau (log)``.
The posterior of ``tau`` is skewed with mass near 0: far from Gaussian.
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws, stack_indexed

POSTERIOR = "eight_schools-eight_schools_noncentered"


def model(y, sigma):
    zero = torch.zeros((), dtype=y.dtype)
    with pyro.plate("schools", y.shape[-1]):
        theta_trans = pyro.sample("theta_trans", dist.Normal(zero, 1.0))
    mu = pyro.sample("mu", dist.Normal(zero, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=y.dtype)))
    with pyro.plate("schools_obs", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu + tau * theta_trans, sigma), obs=y)


def data():
    raw = load_data(POSTERIOR)
    return {
        "y": torch.tensor(raw["y"], dtype=torch.float64),
        "sigma": torch.tensor(raw["sigma"], dtype=torch.float64),
    }


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    theta = torch.tensor(stack_indexed(draws, "theta", d["y"].shape[-1]))
    mu = torch.tensor(draws["mu"])
    tau = torch.tensor(draws["tau"])
    return {"theta_trans": (theta - mu[:, None]) / tau[:, None], "mu": mu, "tau": tau}


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb eight schools (non-centred)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
