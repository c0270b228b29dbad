"""A positivity constraint written as a penalty step instead of a positive prior.

```
beta ~ Normal(0, 1)
log p -= 1e6 where beta < 0      meant as beta > 0 (HalfNormal would do it right)
y_n  ~ Normal(beta, 1)           n = 1..5
```

The step is invisible to gradients, so a Hamiltonian trajectory only finds it by
jumping over it, with an energy error of 1e6: NUTS reports a divergence each
time, here in a large share of its transitions, and the reference is flagged.
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(y):
    beta = pyro.sample("beta", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    pyro.factor("positive", torch.where(beta < 0, -1e6, 0.0).to(y.dtype))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(beta, 1.0), obs=y)


def data():
    return {"y": torch.tensor([0.9, -0.4, 0.3, 0.6, -0.2], dtype=torch.float64)}


SPEC = ModelSpec(name="step_penalty", model=model, data=data)
