"""Conjugate Bayesian linear regression with strongly correlated features.

```
X_n   ~ Normal(0, C),  C_jk = 0.95^|j-k|    n = 1..40, j,k = 1..6  (fixed, seed 1)
w     ~ Normal(0, 1)^6
y_n   ~ Normal(X_n . w, 1.0)                known noise
```

The posterior is exactly Gaussian with precision ``Lambda = X^T X + I``
(Bishop, PRML eq. 3.53-3.54). Correlated columns make ``Lambda`` far from
diagonal, so the mean-field optimum ``sigma_i = 1/sqrt(Lambda_ii)`` (the
conditional sd) is much smaller than the marginal sd ``sqrt((Lambda^-1)_ii)``
(PRML section 10.1.2).
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._contract import LaplaceTorchProblem
from models._glm import conjugate_linear_posterior
from models._linear import linear

PRIOR_SCALE = 1.0
NOISE_SCALE = 1.0
N, D, RHO = 40, 6, 0.95


def model(X, y):
    w = pyro.sample(
        "w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), PRIOR_SCALE).to_event(1)
    )
    with pyro.plate("data", X.shape[-2]):
        # linear(X, w), not X @ w: it broadcasts over vectorised particles.
        pyro.sample("y", dist.Normal(linear(X, w), NOISE_SCALE), obs=y)


def data():
    rng = np.random.default_rng(1)
    index = np.arange(D)
    C = RHO ** np.abs(index[:, None] - index[None, :])
    X = rng.multivariate_normal(np.zeros(D), C, size=N)
    w_true = np.array([1.0, -1.0, 0.5, 0.0, 2.0, -0.5])
    y = X @ w_true + NOISE_SCALE * rng.standard_normal(N)
    return {"X": torch.tensor(X), "y": torch.tensor(y)}


def exact_posterior(d):
    return conjugate_linear_posterior(d["X"], d["y"], PRIOR_SCALE, NOISE_SCALE)


def laplace_torch(d):
    return LaplaceTorchProblem(
        module=torch.nn.Linear(D, 1, bias=False),
        likelihood="regression",
        inputs=d["X"],
        targets=d["y"][:, None],
        site_of_parameter={"weight": "w"},
        prior_precision=1.0 / PRIOR_SCALE**2,
        sigma_noise=NOISE_SCALE,
    )


SPEC = ModelSpec(
    name="linear_correlated",
    pretty_name="Linear regression, correlated features",
    model=model,
    data=data,
    exact_posterior=exact_posterior,
    laplace_torch=laplace_torch,
)
