"""posteriordb ``hmm_example-hmm_example``: a two-state hidden Markov model, states summed out.

```
theta_1, theta_2 ~ flat on the simplex         transition rows (Stan: no prior; flat)
mu               ~ normal(3, 1) x normal(10, 1) on 0 < mu_1 < mu_2     (positive_ordered)
z_1 .. z_N       hidden states in {1, 2}; P(z_t = k | z_{t-1} = j) = theta_j[k]
y_t | z_t = k    ~ normal(mu_k, 1)                                      t = 1..100
```

The discrete states are summed out with the forward algorithm (log-sum-exp,
``models._stan.hmm_log_likelihood``), as in the Stan program, which also gives
the first state no initial distribution. The ordering of ``mu`` removes the
label switching. ``theta_k`` lives in stick-breaking coordinates (one number
each), ``mu`` in Pyro's positive-ordered ones (log of the first, log of the log
gap), not Stan's: the study compares methods in Pyro's flat coordinates.
"""

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models import ModelSpec
from models._posteriordb import indexed_reference_draws, load_data
from models._stan import ordered_normal, flat, hmm_log_likelihood

POSTERIOR = "hmm_example-hmm_example"


def model(y, mu_prior_loc):
    K = mu_prior_loc.shape[-1]
    theta1 = pyro.sample("theta1", flat(constraints.simplex, (K,)))
    theta2 = pyro.sample("theta2", flat(constraints.simplex, (K,)))
    mu = pyro.sample("mu", ordered_normal(mu_prior_loc, torch.ones_like(mu_prior_loc), positive=True))
    log_transition = torch.stack([theta1, theta2], dim=-2).log()            # (..., K, K), row j -> k
    log_emission = dist.Normal(mu.unsqueeze(-2), 1.0).log_prob(y.unsqueeze(-1))  # (..., N, K)
    pyro.factor("y", hmm_log_likelihood(log_emission, log_transition))


def data():
    raw = load_data(POSTERIOR)
    return {
        "y": torch.tensor(raw["y"], dtype=torch.float64),
        "mu_prior_loc": torch.tensor([3.0, 10.0], dtype=torch.float64),
    }


def reference_draws(d):
    K = d["mu_prior_loc"].shape[-1]
    return indexed_reference_draws(POSTERIOR, dict.fromkeys(("theta1", "theta2", "mu"), K))


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb hidden Markov model, 2 states",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
