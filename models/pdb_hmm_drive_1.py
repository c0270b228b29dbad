"""posteriordb ``bball_drive_event_1-hmm_drive_1``: a two-state HMM of a basketball drive, normal emissions.

```
theta_k   ~ Dirichlet(alpha[k, :])        k = 1, 2   transition rows (state 1 none, 2 drive)
phi       ~ normal(0, 1) x normal(3, 1)   on phi_1 < phi_2 (ordered), same for lambda
lambda    ~ normal(0, 1) x normal(3, 1)
z_t       hidden states; P(z_t = k | z_(t-1) = j) = theta_j[k]
u_t | z_t = k  ~ normal(phi_k, tau),  v_t | z_t = k ~ normal(lambda_k, rho)     tau = rho = 0.1
                                          t = 1..416 (u: 1/speed, v: distance to the hoop)
```

The states are summed out with the forward algorithm (log-sum-exp,
``models._stan.hmm_log_likelihood``), as in the Stan program, which gives the
first state no initial distribution. The normal priors on the ordered vectors are
left unnormalised, as Stan's ``target +=`` does (``models._stan.RestrictedNormal``:
not Gaussian, flagged in the report). ``theta_k`` lives in stick-breaking
coordinates, ``phi`` and ``lambda`` in Pyro's ordered coordinates (the first, then the log gap).
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import indexed_reference_draws, load_data
from models._stan import ordered_normal, hmm_log_likelihood

POSTERIOR = "bball_drive_event_1-hmm_drive_1"


def model(u, v, alpha, prior_loc, tau, rho):
    theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
    theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
    scale = torch.ones_like(prior_loc)
    phi = pyro.sample("phi", ordered_normal(prior_loc, scale, positive=False))
    lam = pyro.sample("lambda", ordered_normal(prior_loc, scale, positive=False))
    log_transition = torch.stack([theta1, theta2], dim=-2).log()  # (..., K, K), row j -> k
    log_emission = (dist.Normal(phi.unsqueeze(-2), tau).log_prob(u.unsqueeze(-1))
                    + dist.Normal(lam.unsqueeze(-2), rho).log_prob(v.unsqueeze(-1)))  # (..., N, K)
    pyro.factor("u_v", hmm_log_likelihood(log_emission, log_transition))


def data():
    raw = load_data(POSTERIOR)
    return {
        "u": torch.tensor(raw["u"], dtype=torch.float64),
        "v": torch.tensor(raw["v"], dtype=torch.float64),
        "alpha": torch.tensor(raw["alpha"], dtype=torch.float64),
        "prior_loc": torch.tensor([0.0, 3.0], dtype=torch.float64),
        "tau": torch.tensor(raw["tau"], dtype=torch.float64),
        "rho": torch.tensor(raw["rho"], dtype=torch.float64),
    }


def reference_draws(d):
    K = d["alpha"].shape[-1]
    return indexed_reference_draws(POSTERIOR, dict.fromkeys(("theta1", "theta2", "phi", "lambda"), K))


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb basketball drive HMM (normal emissions)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
