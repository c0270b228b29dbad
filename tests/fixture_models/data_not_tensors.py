"""``data()`` returns a NumPy array where a tensor is expected."""

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros(()), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def data():
    return {"y": np.zeros(3)}


SPEC = ModelSpec(name="data_not_tensors", model=model, data=data)
