"""Logistic regression on scikit-learn's breast-cancer data (real data).

```
X     = standardised features of the 569 tumours, 30 columns
w_j   ~ Normal(0, 1)       j = 1..30
b     ~ Normal(0, 1)
y_n   ~ Bernoulli(sigmoid(X_n . w + b))     y = 1: benign
```

No closed form: the reference is NUTS. Several features are nearly collinear
(radius, perimeter, area), so the posterior is strongly correlated and
mean-field ``sigma`` sits far below the marginal sd.
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._contract import LaplaceTorchProblem
from models._glm import BinaryLogits
from models._linear import linear


def model(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[-1], dtype=X.dtype), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(torch.zeros((), dtype=X.dtype), 1.0))
    with pyro.plate("data", X.shape[-2]):
        pyro.sample("y", dist.Bernoulli(logits=linear(X, w) + b), obs=y)


def data():
    from models._sklearn_data import breast_cancer

    X, y = breast_cancer()  # scikit-learn's bundled copy, read without importing scikit-learn
    X = (X - X.mean(0)) / X.std(0)
    return {"X": torch.tensor(X), "y": torch.tensor(y, dtype=torch.float64)}


def laplace_torch(d):
    return LaplaceTorchProblem(
        module=BinaryLogits(d["X"].shape[-1]),
        likelihood="classification",
        inputs=d["X"],
        targets=d["y"].long(),
        site_of_parameter={"linear.weight": "w", "linear.bias": "b"},
        prior_precision=1.0,
    )


SPEC = ModelSpec(
    name="logistic_breast_cancer",
    pretty_name="Logistic regression, breast cancer (sklearn)",
    model=model,
    data=data,
    laplace_torch=laplace_torch,
)
