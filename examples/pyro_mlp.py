"""A Bayesian MLP written in plain Pyro, without a ``torch.nn.Module``: a model file of your own.

```
W1 ~ Normal(0, 1)^(H x D), b1 ~ Normal(0, 1)^H      H = 16 hidden tanh units, D = 4 inputs
W2 ~ Normal(0, 1)^H,       b2 ~ Normal(0, 1)
y_n ~ Normal(W2 . tanh(W1 x_n + b1) + b2, 0.3)      n = 1..400 (synthetic, seeded)
```

97 weights. Every method runs on it; IVON, which needs no network here, trains the model's flat
log joint (``study.methods.ivon.FlatLogJoint``)::

    python -m study.compare --model examples/pyro_mlp.py --out reports/pyro-mlp

Written for vectorised particles: a global latent has batch shape ``(particles, 1)``, so the
layers are broadcast products summed over their last dimension, never ``x @ W``. It takes
``subsample_size``, so a large version of it would be fitted on mini-batches of rows.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec

HIDDEN, INPUTS, NOISE = 16, 4, 0.3


def model(x, y, subsample_size=None):
    zeros = torch.zeros((), dtype=x.dtype)
    w1 = pyro.sample("W1", dist.Normal(zeros, 1.0).expand([HIDDEN, INPUTS]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(zeros, 1.0).expand([HIDDEN]).to_event(1))
    w2 = pyro.sample("W2", dist.Normal(zeros, 1.0).expand([HIDDEN]).to_event(1))
    b2 = pyro.sample("b2", dist.Normal(zeros, 1.0))
    with pyro.plate("data", x.shape[0], subsample_size=subsample_size) as rows:
        # x[rows]: (n, D); w1: (..., 1, H, D) under particles -> hidden (..., n, H).
        hidden = torch.tanh((x[rows].unsqueeze(-2) * w1).sum(-1) + b1)
        mean = (hidden * w2).sum(-1) + b2
        pyro.sample("y", dist.Normal(mean, NOISE), obs=y[rows])


def data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((400, INPUTS))
    truth = np.tanh(x @ rng.standard_normal((INPUTS, 3))) @ np.array([1.5, -1.0, 0.8])
    y = truth + NOISE * rng.standard_normal(400)
    return {"x": torch.tensor(x), "y": torch.tensor(y)}


SPEC = ModelSpec(name="pyro_mlp", model=model, data=data, pretty_name="Bayesian MLP 4-16-1 in plain Pyro (97 weights)",
                 svi_particles=8)
