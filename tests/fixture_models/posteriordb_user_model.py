"""A model file of one's own on a posteriordb posterior: log earnings on height.

    beta  ~ flat on R^2,  sigma ~ flat on (0, inf)      (Stan: no prior statements)
    log(earn) ~ normal(beta_1 + beta_2 height, sigma)
"""
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws, stack_indexed

POSTERIOR = "earnings-logearn_height"  # any posterior of your posteriordb clone


def model(height, log_earn):
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with pyro.plate("people", height.shape[-1]):
        pyro.sample("log_earn", dist.Normal(beta[..., 0] + beta[..., 1] * height, sigma), obs=log_earn)


def data():
    raw = load_data(POSTERIOR)  # the shipped copy, or the clone given by --posteriordb
    return {"height": torch.tensor(raw["height"], dtype=torch.float64),
            "log_earn": torch.log(torch.tensor(raw["earn"], dtype=torch.float64))}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)  # gold draws: needs the clone
    return {"beta": torch.tensor(stack_indexed(draws, "beta", 2)), "sigma": torch.tensor(draws["sigma"])}


SPEC = ModelSpec(name="my_logearn_height", model=model, data=data, reference_draws=reference_draws,
                 needs_posteriordb=True)
