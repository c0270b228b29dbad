"""posteriordb ``gp_pois_regr-gp_regr``: Gaussian-process regression, hyperparameters only.

```
rho   ~ gamma(25, 4)                     length scale (not Gaussian: flagged in the report)
alpha ~ half-normal(0, 2)                marginal sd  (not Gaussian)
sigma ~ half-normal(0, 1)                noise        (not Gaussian)
K     = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + sigma I     (sigma, not sigma^2, as in Stan)
y     ~ multi_normal(0, K)               11 points, x on -10..10
```

The latent function is integrated out analytically; three hyperparameters remain.
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws

POSTERIOR = "gp_pois_regr-gp_regr"


def model(x, y):
    rho = pyro.sample("rho", dist.Gamma(torch.tensor(25.0, dtype=x.dtype), 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(torch.tensor(2.0, dtype=x.dtype)))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    # No plates: the parameters are () or (particles,); two trailing dims make (..., N, N).
    sq_dist = (x.unsqueeze(-1) - x.unsqueeze(-2)) ** 2
    a, r, s = (v.unsqueeze(-1).unsqueeze(-1) for v in (alpha, rho, sigma))
    cov = a**2 * torch.exp(-0.5 * sq_dist / r**2) + s * torch.eye(x.shape[-1], dtype=x.dtype)
    pyro.sample("y", dist.MultivariateNormal(torch.zeros_like(x), scale_tril=torch.linalg.cholesky(cov)), obs=y)


def data():
    raw = load_data(POSTERIOR)
    return {"x": torch.tensor(raw["x"], dtype=torch.float64), "y": torch.tensor(raw["y"], dtype=torch.float64)}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {name: torch.tensor(draws[name]) for name in ("rho", "alpha", "sigma")}


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb Gaussian-process regression (hyperparameters)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
