"""A logistic regression with 2,000 weights on 1,000 synthetic rows: the size-guard benchmark.

```
w   ~ normal(0, 1)^2000
y_n ~ Bernoulli(logit^-1(x_n . w))        x_n ~ normal(0, I / 2000), fixed seed
```

Run as a user model file::

    python -m study.compare --model benchmarks/model_files/logistic_2000.py --quick \
        --methods laplace_full laplace_diag svi_meanfield
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._linear import linear

D, N = 2000, 1000


def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), 1.0).to_event(1))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Bernoulli(logits=linear(X, w)), obs=y)


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D)) / np.sqrt(D)
    w = rng.standard_normal(D)
    y = (rng.random(N) < 1 / (1 + np.exp(-X @ w))).astype(float)
    return {"X": torch.tensor(X), "y": torch.tensor(y)}


SPEC = ModelSpec(
    name="logistic_2000",
    pretty_name="Logistic regression, 2,000 weights (synthetic)",
    model=model,
    data=data,
)
