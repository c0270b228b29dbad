"""A model file that forgets ``SPEC = ModelSpec(...)``."""

import pyro
import pyro.distributions as dist
import torch


def model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros(()), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def data():
    return {"y": torch.zeros(3)}
