"""A logistic regression with 2,000 weights on 3,000 synthetic rows, written as a user would.

```
w   ~ normal(0, 1)^2000
y_n ~ Bernoulli(logit^-1(x_n . w))        x_n ~ normal(0, I / 2000), fixed seed
```

The linear predictor is ``(X * w).sum(-1)``, the form the README teaches (it broadcasts
against Pyro's vectorised particles), not the study's internal ``models._linear.linear``:
each Hessian-vector product through it holds an ``N x d`` temporary (48 MB here), which is
what the exact Hessian's memory budget (``study.core.joint.FlatJoint.hessian``) is for.

Run as a user model file::

    python -m study.compare --model benchmarks/model_files/logistic_2000_sum.py \
        --methods laplace_full laplace_diag --out /tmp/logistic_2000_sum
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec

D, N = 2000, 3000


def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), 1.0).to_event(1))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Bernoulli(logits=(X * w).sum(-1)), obs=y)


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D)) / np.sqrt(D)
    w = rng.standard_normal(D)
    y = (rng.random(N) < 1 / (1 + np.exp(-X @ w))).astype(float)
    return {"X": torch.tensor(X), "y": torch.tensor(y)}


SPEC = ModelSpec(
    name="logistic_2000_sum",
    pretty_name="Logistic regression, 2,000 weights, (X * w).sum(-1) (synthetic)",
    model=model,
    data=data,
)
