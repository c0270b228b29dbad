"""posteriordb ``arK-arK``: an autoregressive model of order 5.

```
alpha   ~ normal(0, 10)
beta_k  ~ normal(0, 10)               k = 1..5
sigma   ~ half-Cauchy(0, 2.5)         (not Gaussian: flagged in the report)
y_t     ~ normal(alpha + sum_k beta_k y_{t-k}, sigma)    t = 6..200
```

The first 5 observations are conditioned on, not modelled (as in the Stan
model); the lag matrix is built in ``data()``, like Stan's transformed data.
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._linear import NormalLinear
from models._posteriordb import load_data, load_reference_draws, stack_indexed

POSTERIOR = "arK-arK"


def model(lags, y_now):
    zero = torch.zeros((), dtype=lags.dtype)
    alpha = pyro.sample("alpha", dist.Normal(zero, 10.0))
    beta = pyro.sample("beta", dist.Normal(zero, 10.0).expand([lags.shape[-1]]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(torch.tensor(2.5, dtype=lags.dtype)))
    # prod_t normal(y_t | alpha + lags_t . beta, sigma) as one event over time, from the lag
    # matrix's sufficient statistics (NormalLinear).
    pyro.sample("y", NormalLinear(lags, beta, sigma, intercept=alpha), obs=y_now)


def data():
    raw = load_data(POSTERIOR)
    K, T = int(raw["K"]), int(raw["T"])
    y = torch.tensor(raw["y"], dtype=torch.float64)
    # lags[t - K, k - 1] = y[t - k]: beta_k multiplies the observation k steps back.
    lags = torch.stack([y[K - k : T - k] for k in range(1, K + 1)], dim=-1)
    return {"lags": lags, "y_now": y[K:]}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {
        "alpha": torch.tensor(draws["alpha"]),
        "beta": torch.tensor(stack_indexed(draws, "beta", d["lags"].shape[-1])),
        "sigma": torch.tensor(draws["sigma"]),
    }


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb arK (AR(5) time series)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
