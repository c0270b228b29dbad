"""posteriordb ``one_comp_mm_elim_abs-one_comp_mm_elim_abs``: one-compartment pharmacokinetics.

```
k_a, K_m, V_m, sigma ~ half-Cauchy(0, 1)    (not Gaussian: flagged in the report)
dC/dt = exp(-k_a t) D k_a / V  -  (V_m / V) C / (K_m + C),    C(t0 = 0) = 0
C_hat_n ~ lognormal(log C(t_n), sigma)     t_n = 0.5, 1, ..., 10 days
```

First-order absorption of a dose ``D = 30`` mg into a compartment of ``V = 2`` L with
Michaelis-Menten elimination (rate ``k_a``, constant ``K_m``, maximum rate ``V_m``).
Stan integrates with its BDF solver (relative and absolute tolerance 1e-6); here a
fixed-grid RK4 (``models/_ode.py``) with steps growing geometrically from 1e-6 days over
the first half day, where C passes K_m and the elimination switches on, and 2 steps per
later half day. Its error in log C against SciPy's Radau at tolerance 1e-11 is checked at
the extreme gold draws in ``tests/test_ode.py`` (below 2e-5, against sigma ~ 0.13). The
grid is made for the posterior's region: far outside it (a tiny K_m with a large V_m) C
falls to K_m late and the half-day steps become unstable (NaN). Stan's model
doses only for ``t > 0``; a single point does not change the solution, and the RK4 stage
at ``t = 0`` uses the dose's limit from the right.
"""

import pyro
import pyro.distributions as dist
import torch

from models import ModelSpec
from models._ode import output_grid, rk4, stage_times
from models._posteriordb import load_data, load_reference_draws

POSTERIOR = "one_comp_mm_elim_abs-one_comp_mm_elim_abs"

# Integration grid: see the module docstring and tests/test_ode.py for its error.
STEPS_PER_INTERVAL = 2
FIRST_INTERVAL_STEPS = 24
FIRST_STEP = 1e-6


def concentration(k_a, K_m, V_m, D, V, t0, times):
    """C at the output times.

    Parameters
    ----------
    k_a, K_m, V_m : torch.Tensor
        Same batch shape ``B``.
    D, V, t0 : torch.Tensor
        Scalars (data).
    times : torch.Tensor
        Shape ``(N_t,)``, increasing, after ``t0``.

    Returns
    -------
    torch.Tensor
        Shape ``B[:-1] + (N_t,)`` when ``B`` ends in the data plate's placeholder 1 (Pyro's
        vectorised particles), else ``B + (N_t,)``; for scalar parameters ``(N_t,)``.
    """
    # A trailing singleton (the data plate's slot) becomes the time axis, so the result
    # lines up with the plate both for scalar parameters and under vectorised particles.
    k_a, K_m, V_m = (torch.atleast_1d(p) for p in (k_a, K_m, V_m))
    grid, output_index = output_grid(
        float(t0), times.tolist(), STEPS_PER_INTERVAL, FIRST_INTERVAL_STEPS, FIRST_STEP
    )
    # The absorption term depends on t alone: evaluate it at every RK4 stage time at once.
    at = stage_times(grid)
    absorption = (D * k_a / V).unsqueeze(-1) * torch.exp(-k_a.unsqueeze(-1) * torch.tensor(at, dtype=k_a.dtype))
    elimination = V_m / V
    # The rate a(t) - e C / (K_m + C), written a(t) - e + e K_m / (K_m + C): with a(t) - e
    # evaluated at every stage time at once, each stage records two operations (an add and
    # an addcdiv) instead of four. It rounds differently only in the last digits.
    offset_at = dict(zip(at, (absorption - elimination.unsqueeze(-1)).unbind(-1)))
    saturation = elimination * K_m

    def rate(t, C):
        return torch.addcdiv(offset_at[t], saturation, K_m + C)

    states = rk4(rate, torch.zeros_like(k_a + K_m + V_m), grid)
    return torch.cat([states[i] for i in output_index], dim=-1)


def model(t0, D, V, times, C_hat):
    one = torch.ones((), dtype=C_hat.dtype)
    k_a = pyro.sample("k_a", dist.HalfCauchy(one))
    K_m = pyro.sample("K_m", dist.HalfCauchy(one))
    V_m = pyro.sample("V_m", dist.HalfCauchy(one))
    sigma = pyro.sample("sigma", dist.HalfCauchy(one))
    C = concentration(k_a, K_m, V_m, D, V, t0, times)
    with pyro.plate("times", C_hat.shape[-1]):
        pyro.sample("C_hat", dist.LogNormal(C.log(), sigma), obs=C_hat)


def data():
    raw = load_data(POSTERIOR)
    return {key: torch.tensor(raw[key], dtype=torch.float64) for key in ("t0", "D", "V", "times", "C_hat")}


def reference_draws(d):
    draws = load_reference_draws(POSTERIOR)
    return {name: torch.tensor(draws[name]) for name in ("k_a", "K_m", "V_m", "sigma")}


SPEC = ModelSpec(
    name=POSTERIOR,
    pretty_name="posteriordb one-compartment pharmacokinetics (ODE)",
    model=model,
    data=data,
    reference_draws=reference_draws,
    posteriordb=POSTERIOR,
)
