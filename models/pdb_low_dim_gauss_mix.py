"""posteriordb ``low_dim_gauss_mix-low_dim_gauss_mix``: a two-component Gaussian mixture.

```
mu      : ordered (mu_1 < mu_2),  mu_k ~ normal(0, 2)     (identifies the components)
sigma_k ~ half-normal(0, 2)          k = 1, 2
theta   ~ beta(5, 5)                 (not Gaussian: flagged in the report)
y_n     ~ theta normal(mu_1, sigma_1) + (1 - theta) normal(mu_2, sigma_2)   n = 1..1000
```

The component of each observation is summed out (``log_mix`` in Stan, a logsumexp over
the two components here). ``mu``'s prior is Stan's ``normal(0, 2)`` on an ordered vector,
i.e. two iid normals restricted to ``mu_1 < mu_2``: the law of sorted iid normal draws
(``OrderedNormal``). Its unconstrained coordinates are ``mu_1`` and ``log(mu_2 - mu_1)``.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws, stack_indexed

POSTERIOR = "low_dim_gauss_mix-low_dim_gauss_mix"


class OrderedNormal(dist.TorchDistribution):
    """``size`` iid ``Normal(loc, scale)`` restricted to increasing vectors.

    The density on ``x_1 < ... < x_K`` is ``K! prod_k N(x_k | loc, scale)``: the law of
    ``K`` sorted iid normal draws, which is also how it samples.

    Parameters
    ----------
    loc, scale : torch.Tensor
        Scalars (the batch shape is empty; Pyro's plates expand it).
    size : int
        ``K``, the event shape is ``(K,)``.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.ordered_vector

    def __init__(self, loc, scale, size: int, validate_args=None):
        self.loc, self.scale, self.size = torch.as_tensor(loc), torch.as_tensor(scale), int(size)
        super().__init__(torch.Size(), torch.Size([self.size]), validate_args=validate_args)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            draws = self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype)
        return draws.sort(dim=-1).values

    def log_prob(self, value):
        normal = dist.Normal(self.loc, self.scale).log_prob(value).sum(-1)
        return normal + math.lgamma(self.size + 1)


def model(y):
    zero = torch.zeros((), dtype=y.dtype)
    mu = pyro.sample("mu", OrderedNormal(zero, zero + 2.0, 2))
    sigma = pyro.sample("sigma", dist.HalfNormal(zero + 2.0).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(zero + 5.0, zero + 5.0))
    # log theta, log(1 - theta), stacked on a last axis that lines up with mu's and sigma's.
    log_weights = torch.stack([theta.log(), torch.log1p(-theta)], dim=-1)
    with pyro.plate("data", y.shape[-1]):
        mixture = dist.MixtureSameFamily(dist.Categorical(logits=log_weights), dist.Normal(mu, sigma))
        pyro.sample("y", mixture, obs=y)


def data():
    return {"y": torch.tensor(load_data(POSTERIOR)["y"], dtype=torch.float64)}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {
        "mu": torch.tensor(stack_indexed(draws, "mu", 2)),
        "sigma": torch.tensor(stack_indexed(draws, "sigma", 2)),
        "theta": torch.tensor(draws["theta"]),
    }


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb low-dimensional Gaussian mixture",
    model=model,
    data=data,
    reference_draws=reference_draws,
    needs_posteriordb=True,
)
