"""posteriordb ``kilpisjarvi_mod-kilpisjarvi``: a linear trend on an uncentred time axis.

```
x     = year (3952..4013 as stored), uncentred on purpose
alpha ~ normal(9.31, 100)
beta  ~ normal(0, 0.0333)
sigma ~ flat on (0, inf)              (improper, as in Stan: flat in sigma)
y     ~ normal(alpha + beta x, sigma)
```

corr(alpha, beta) = -0.99999 in the posterior: the hardest case for mean-field
(its ``sigma`` is the conditional sd, hundreds of times below the marginal
one) and for single precision, so everything runs in float64.
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws

POSTERIOR = "kilpisjarvi_mod-kilpisjarvi"


def model(x, y, pmualpha, psalpha, pmubeta, psbeta):
    alpha = pyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = pyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = pyro.sample(
        "sigma", dist.ImproperUniform(constraints.positive, (), ()).to_event(0)
    )
    with pyro.plate("data", x.shape[-1]):
        pyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def data():
    raw = load_data(POSTERIOR)
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return {
        "x": f64(raw["x"]),
        "y": f64(raw["y"]),
        "pmualpha": f64(raw["pmualpha"]),
        "psalpha": f64(raw["psalpha"]),
        "pmubeta": f64(raw["pmubeta"]),
        "psbeta": f64(raw["psbeta"]),
    }


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {name: torch.tensor(draws[name]) for name in ("alpha", "beta", "sigma")}


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb Kilpisjarvi (uncentred trend)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
    svi_steps_scale=2.0,
)
