"""posteriordb ``garch-garch11``: a GARCH(1, 1) volatility model.

```
mu      ~ flat on R                                     (Stan: no prior statements; improper,
alpha0  ~ flat on (0, inf)                               flagged in the report)
alpha1  ~ flat on (0, 1)
beta1   = (1 - alpha1) beta1_share,  beta1_share ~ flat on (0, 1)
          (flat in beta1 on (0, 1 - alpha1): the Jacobian 1 - alpha1 is added)
sigma_1 = sigma1 (given)
sigma_t = sqrt(alpha0 + alpha1 (y_{t-1} - mu)^2 + beta1 sigma_{t-1}^2)     t = 2..200
y_t     ~ normal(mu, sigma_t)
```

The variance recursion is linear in ``sigma_t^2`` with the constant coefficient
``beta1``: a parallel scan (``models._stan.linear_recurrence``) evaluates it.
Stan's ``real<lower=0, upper=(1 - alpha1)> beta1`` has a bound that depends on
another parameter; the study's flat coordinates need fixed supports, so the
model samples the share ``beta1_share = beta1 / (1 - alpha1)`` in (0, 1) and adds
``log(1 - alpha1)``, the Jacobian of ``beta1_share -> beta1``. That is exactly
Stan's own change of variables: the flat coordinate ``logit(beta1_share)`` is
Stan's unconstrained ``beta1``, and the density over (alpha1, beta1) is Stan's.
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws
from models._stan import flat, linear_recurrence

POSTERIOR = "garch-garch11"


def model(y, sigma1):
    mu = pyro.sample("mu", flat(constraints.real))
    alpha0 = pyro.sample("alpha0", flat(constraints.positive))
    alpha1 = pyro.sample("alpha1", flat(constraints.unit_interval))
    beta1_share = pyro.sample("beta1_share", flat(constraints.unit_interval))
    pyro.factor("beta1_jacobian", torch.log1p(-alpha1))
    beta1 = (1 - alpha1) * beta1_share
    # sigma_t^2 = beta1 sigma_{t-1}^2 + (alpha0 + alpha1 (y_{t-1} - mu)^2): linear in sigma^2.
    drive = alpha0 + alpha1 * (y[:-1] - mu) ** 2                           # t = 2..T
    drive = torch.cat([torch.ones_like(drive[..., :1]) * sigma1**2, drive], dim=-1)
    sigma = linear_recurrence(beta1, drive).sqrt()
    with pyro.plate("time", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def data():
    raw = load_data(POSTERIOR)
    return {"y": torch.tensor(raw["y"], dtype=torch.float64), "sigma1": torch.tensor(raw["sigma1"], dtype=torch.float64)}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    alpha1, beta1 = torch.tensor(draws["alpha1"]), torch.tensor(draws["beta1"])
    return {
        "mu": torch.tensor(draws["mu"]),
        "alpha0": torch.tensor(draws["alpha0"]),
        "alpha1": alpha1,
        "beta1_share": beta1 / (1 - alpha1),
    }


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb GARCH(1, 1) volatility",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
