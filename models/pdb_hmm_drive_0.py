"""posteriordb ``bball_drive_event_0-hmm_drive_0``: a two-state HMM of a basketball drive, exponential emissions.

```
theta_k   ~ Dirichlet(alpha[k, :])        k = 1, 2   transition rows (state 1 none, 2 drive)
phi       ~ normal(0, 1) x normal(3, 1)   on 0 < phi_1 < phi_2 (positive_ordered), same for lambda
lambda    ~ normal(0, 1) x normal(3, 1)
z_t       hidden states; P(z_t = k | z_(t-1) = j) = theta_j[k]
u_t | z_t = k  ~ exponential(phi_k),  v_t | z_t = k ~ exponential(lambda_k)
                                          t = 1..416 (u: 1/speed, v: distance to the hoop)
```

The states are summed out with the forward algorithm (log-sum-exp,
``models._stan.hmm_log_likelihood``), as in the Stan program, which gives the
first state no initial distribution. The normal priors on the ordered vectors are
left unnormalised, as Stan's ``target +=`` does (``models._stan.RestrictedNormal``:
not Gaussian, flagged in the report). ``theta_k`` lives in stick-breaking
coordinates, ``phi`` and ``lambda`` in Pyro's positive-ordered coordinates (log of the first, log of the log gap).
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import indexed_reference_draws, load_data
from models._stan import hmm_log_likelihood, init_to_values, ordered_normal

POSTERIOR = "bball_drive_event_0-hmm_drive_0"


def model(u, v, alpha, prior_loc):
    theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
    theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
    scale = torch.ones_like(prior_loc)
    phi = pyro.sample("phi", ordered_normal(prior_loc, scale, positive=True))
    lam = pyro.sample("lambda", ordered_normal(prior_loc, scale, positive=True))
    log_transition = torch.stack([theta1, theta2], dim=-2).log()  # (..., K, K), row j -> k
    log_emission = (dist.Exponential(phi.unsqueeze(-2)).log_prob(u.unsqueeze(-1))
                    + dist.Exponential(lam.unsqueeze(-2)).log_prob(v.unsqueeze(-1)))  # (..., N, K)
    pyro.factor("u_v", hmm_log_likelihood(log_emission, log_transition))


def data():
    raw = load_data(POSTERIOR)
    return {
        "u": torch.tensor(raw["u"], dtype=torch.float64),
        "v": torch.tensor(raw["v"], dtype=torch.float64),
        "alpha": torch.tensor(raw["alpha"], dtype=torch.float64),
        "prior_loc": torch.tensor([0.0, 3.0], dtype=torch.float64),
    }


def _moment_rates(key):
    """Rates a factor 2 either side of 1 / mean: a start for the MAP search near the data.

    From ``z = 0`` (rates 1 and e) L-BFGS's line search overflows Pyro's doubly
    exponential positive-ordered map; the posterior does not depend on the start.
    """
    rate = 1.0 / torch.tensor(load_data(POSTERIOR)[key], dtype=torch.float64).mean()
    return torch.stack([rate / 2, rate * 2])


def reference_draws(d):
    K = d["alpha"].shape[-1]
    return indexed_reference_draws(POSTERIOR, dict.fromkeys(("theta1", "theta2", "phi", "lambda"), K))


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb basketball drive HMM (exponential emissions)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
    init_loc_fn=init_to_values({"phi": lambda: _moment_rates("u"), "lambda": lambda: _moment_rates("v")}),
)
