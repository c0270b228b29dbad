"""posteriordb ``arma-arma11``: an ARMA(1, 1) time series.

```
mu    ~ normal(0, 10)
phi   ~ normal(0, 2)                    autoregression
theta ~ normal(0, 2)                    moving average
sigma ~ half-Cauchy(0, 2.5)             (not Gaussian: flagged in the report)
nu_1  = mu + phi mu,  err_1 = y_1 - nu_1          (err_0 = 0, as in Stan)
nu_t  = mu + phi y_{t-1} + theta err_{t-1},  err_t = y_t - nu_t     t = 2..200
err_t ~ normal(0, sigma)
```

The errors are a linear recursion in ``theta``, evaluated by a parallel scan
(``models._stan.linear_recurrence``: the loop's numbers in log2 T steps).
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws
from models._stan import linear_recurrence

POSTERIOR = "arma-arma11"


def model(y):
    zero = torch.zeros((), dtype=y.dtype)
    mu = pyro.sample("mu", dist.Normal(zero, 10.0))
    phi = pyro.sample("phi", dist.Normal(zero, 2.0))
    theta = pyro.sample("theta", dist.Normal(zero, 2.0))
    sigma = pyro.sample("sigma", dist.HalfCauchy(torch.tensor(2.5, dtype=y.dtype)))
    # Parameters broadcast against the time axis (the last one).
    y_lag = torch.cat([torch.zeros_like(y[:1]), y[:-1]])
    shock = y - (mu + phi * y_lag)                      # y_t - mu - phi y_{t-1}; t = 1 needs - phi mu
    shock = torch.cat([shock[..., :1] - phi * mu, shock[..., 1:]], dim=-1)
    err = linear_recurrence(-theta, shock)              # err_t = shock_t - theta err_{t-1}
    with pyro.plate("time", y.shape[-1]):
        pyro.sample("err", dist.Normal(zero, sigma), obs=err)


def data():
    return {"y": torch.tensor(load_data(POSTERIOR)["y"], dtype=torch.float64)}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {name: torch.tensor(draws[name]) for name in ("mu", "phi", "theta", "sigma")}


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb ARMA(1, 1) time series",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
