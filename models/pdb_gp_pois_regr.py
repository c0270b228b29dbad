"""posteriordb ``gp_pois_regr-gp_pois_regr``: Poisson regression on a latent Gaussian process.

```
rho     ~ gamma(25, 4)                   length scale (not Gaussian: flagged in the report)
alpha   ~ half-normal(0, 2)              marginal sd  (not Gaussian)
f_tilde ~ normal(0, 1)^11                whitened latent function
K       = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I,   L = cholesky(K)
f       = L f_tilde
k_i     ~ Poisson(exp(f_i))              i = 1..11, x on -10..10
```

The non-centred parameterisation of the Stan program: the latents are
``f_tilde``; posteriordb's gold draws hold ``f``, mapped back to
``f_tilde = L^-1 f`` draw by draw (``L`` from that draw's ``alpha``, ``rho``).
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._posteriordb import load_data, load_reference_draws, stack_indexed

POSTERIOR = "gp_pois_regr-gp_pois_regr"
JITTER = 1e-10


def cholesky_factor(x, alpha, rho):
    """Cholesky factor of Stan's ``gp_exp_quad_cov(x, alpha, rho) + 1e-10 I``.

    ``alpha`` and ``rho`` of shape ``()`` or ``(..., 1)`` give ``(N, N)`` or ``(..., N, N)``.
    """
    sq_dist = (x.unsqueeze(-1) - x.unsqueeze(-2)) ** 2
    a, r = alpha.unsqueeze(-1), rho.unsqueeze(-1)
    cov = a**2 * torch.exp(-0.5 * sq_dist / r**2) + JITTER * torch.eye(x.shape[-1], dtype=x.dtype)
    return torch.linalg.cholesky(cov)


def model(x, k):
    rho = pyro.sample("rho", dist.Gamma(torch.tensor(25.0, dtype=x.dtype), 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(torch.tensor(2.0, dtype=x.dtype)))
    f_tilde = pyro.sample("f_tilde", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
    # alpha, rho: () or (particles, 1), the 1 being the data plate's place: L is (..., N, N).
    scale_tril = cholesky_factor(x, alpha, rho)
    f = (scale_tril * f_tilde).sum(-1)  # L f_tilde; f_tilde is (N,) or (particles, 1, N)
    with pyro.plate("data", x.shape[-1]):
        pyro.sample("k", dist.Poisson(f.exp()), obs=k)


def data():
    raw = load_data(POSTERIOR)
    return {"x": torch.tensor(raw["x"], dtype=torch.float64), "k": torch.tensor(raw["k"], dtype=torch.float64)}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    alpha, rho = torch.tensor(draws["alpha"]), torch.tensor(draws["rho"])
    f = torch.tensor(stack_indexed(draws, "f", d["x"].shape[-1]))
    scale_tril = cholesky_factor(d["x"], alpha[:, None], rho[:, None])
    f_tilde = torch.linalg.solve_triangular(scale_tril, f.unsqueeze(-1), upper=False).squeeze(-1)
    return {"rho": rho, "alpha": alpha, "f_tilde": f_tilde}


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb Gaussian-process Poisson regression",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
