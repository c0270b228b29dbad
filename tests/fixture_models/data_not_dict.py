"""``data()`` returns a list instead of ``dict[str, torch.Tensor]``."""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def data():
    return [torch.zeros(3)]


SPEC = ModelSpec(name="data_not_dict", model=model, data=data)
