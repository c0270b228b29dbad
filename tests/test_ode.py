"""The fixed-grid RK4 of models/_ode.py against SciPy's tight-tolerance solver."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from models._ode import output_grid, rk4, stage_times
from models.pdb_one_comp_mm_elim_abs import concentration

# The one_comp_mm_elim_abs data: dose 30 mg, volume 2 L, measured every half day.
D, V, T0 = 30.0, 2.0, 0.0
TIMES = np.arange(1, 21) * 0.5


def _reference_concentration(k_a, K_m, V_m):
    def rate(t, C):
        return np.exp(-k_a * t) * D * k_a / V - V_m / V * C / (K_m + C)

    solution = solve_ivp(rate, (T0, TIMES[-1]), [0.0], t_eval=TIMES, method="Radau", rtol=1e-11, atol=1e-13)
    assert solution.success
    return solution.y[0]


# Gold draws of (k_a, K_m, V_m) from posteriordb: those holding the smallest and largest
# k_a, K_m and V_m and the largest V_m / K_m (the stiffest start) among the 10,000, and one
# with the median K_m. The fixed grid is meant for the posterior's region: far outside it
# (K_m = 0.002 with V_m = 6.9, say) C falls to K_m late, where steps of 0.25 days are unstable.
POSTERIOR_POINTS = [
    (0.6978, 0.9794, 0.8654),
    (0.7656, 0.3059, 0.1415),
    (0.7291, 0.000122, 0.7579),
    (1.473, 0.2172, 0.9488),
    (0.507, 3.557, 1.307),
    (0.7665, 295.8, 21.54),
    (0.6789, 266.3, 21.94),
]


def test_rk4_concentration_matches_radau_across_the_posterior():
    # Shape (7, 1): the trailing 1 is the slot of the model's data plate.
    k_a, K_m, V_m = (torch.tensor(v, dtype=torch.float64).unsqueeze(-1) for v in zip(*POSTERIOR_POINTS))
    C = concentration(
        k_a, K_m, V_m, torch.tensor(D), torch.tensor(V), torch.tensor(T0), torch.tensor(TIMES)
    ).numpy()
    assert C.shape == (len(POSTERIOR_POINTS), len(TIMES))
    reference = np.array([_reference_concentration(*corner) for corner in POSTERIOR_POINTS])
    error = np.abs(np.log(C) - np.log(reference))
    # The likelihood sees log C next to sigma >= 0.08 (gold draws' 0.1% quantile); an error
    # of 2e-5 is under 1/4000 of it, and below the 1e-6 relative tolerance Stan's BDF
    # solver was run with times the size of log C. Deterministic: no Monte Carlo error.
    assert error.max() < 2e-5, (error.max(), POSTERIOR_POINTS[int(np.argmax(error.max(1)))])


def test_concentration_broadcasts_over_particles_and_the_plate_slot():
    args = (torch.tensor(D), torch.tensor(V), torch.tensor(T0), torch.tensor(TIMES))
    scalar = concentration(torch.tensor(0.8), torch.tensor(2.0), torch.tensor(1.0), *args)
    assert scalar.shape == (len(TIMES),)
    particles = torch.tensor([[0.8], [0.9]]), torch.tensor([[2.0], [3.0]]), torch.tensor([[1.0], [1.5]])
    batched = concentration(*particles, *args)
    assert batched.shape == (2, len(TIMES))
    torch.testing.assert_close(batched[0], scalar, rtol=1e-12, atol=0)


def test_rk4_is_fourth_order_on_exponential_decay():
    # y' = -y, y(0) = 1 on [0, 1]: halving the step divides the global error by 2^4 = 16.
    errors = []
    for steps in (8, 16, 32):
        grid = [k / steps for k in range(steps + 1)]
        y = rk4(lambda t, y: -y, torch.tensor(1.0, dtype=torch.float64), grid)[-1]
        errors.append(abs(float(y) - math.exp(-1.0)))
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(14 < r < 18 for r in ratios), ratios


def test_output_grid_hits_every_output_time_and_stage_times_cover_the_steps():
    grid, index = output_grid(0.0, TIMES, 2, 24, 1e-6)
    assert [grid[i] for i in index] == list(TIMES)
    assert all(b > a for a, b in zip(grid, grid[1:])) and grid[1] == pytest.approx(1e-6)
    assert set(grid) <= set(stage_times(grid))
    with pytest.raises(ValueError, match="increasing"):
        output_grid(0.0, [1.0, 0.5], 2, 24, 1e-6)
