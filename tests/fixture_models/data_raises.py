"""``data()`` reads a file that is not there."""

from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec


def model(y):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def data():
    values = Path(__file__).with_name("no_such_data.csv").read_text()
    return {"y": torch.tensor([float(v) for v in values.split(",")])}


SPEC = ModelSpec(name="data_raises", model=model, data=data)
