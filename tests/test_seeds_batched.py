"""The mean-field seeds as one vectorised fit (``study.methods.svi.seeds``): each seed on its own
random stream, so that seed k of the batch is the fit of seed k run alone."""

import numpy as np
import pytest
import torch

from conftest import make_run
from study.methods.svi import seeds as seeds_module
from study.methods.svi.seeds import SeedObjective, batches_seeds, fit_seeds


@pytest.fixture(scope="module")
def batch_and_lone():
    run = make_run("linear_correlated")
    run.progress = False
    seeds = [11, 22, 33]
    return seeds, fit_seeds(run, seeds), [fit_seeds(run, [seed])[0] for seed in seeds]


def test_seed_k_of_the_batch_is_the_lone_fit_of_seed_k(batch_and_lone):
    seeds, batch, lone = batch_and_lone
    # The seeds stop at their own steps (here not all at once), and leave the batch then.
    assert len({r.steps for r in batch}) > 1, [r.steps for r in batch]
    for together, alone in zip(batch, lone):
        assert together.steps == alone.steps
        # "To rounding": the batch's vectorised kernels may round differently from the lone run's.
        np.testing.assert_allclose(together.sd, alone.sd, rtol=1e-12, atol=0)
        np.testing.assert_allclose(together.mean, alone.mean, rtol=0, atol=1e-12 * float(alone.sd.min()))
        np.testing.assert_allclose(together.loss, alone.loss, rtol=1e-12)
        np.testing.assert_allclose(together.sigma_changes, alone.sigma_changes, rtol=1e-9, atol=1e-15)


def test_the_seeds_are_independent_fits(batch_and_lone):
    _, batch, _ = batch_and_lone
    # Different streams: different iterates, but the same answer within the seed-to-seed noise.
    sds = np.stack([r.sd for r in batch])
    assert not np.array_equal(sds[0], sds[1])
    spread = sds.std(0, ddof=1) / sds.mean(0)
    assert float(spread.max()) < 0.05


def test_the_compiled_objective_is_the_plain_one():
    run = make_run("linear_correlated")
    objective = SeedObjective(run)
    K, P, d = 3, 5, run.joint.dim
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(K, d, generator=generator)
    rho = torch.randn(K, d, generator=generator) - 2.0
    eps = torch.randn(K, P, d, generator=generator)
    compiled = objective(loc, rho, eps, compile=True)
    assert objective.use_jit is True
    np.testing.assert_allclose(compiled, objective.plain(loc, rho, eps), rtol=1e-12)
    # The closed-form entropy: -ELBO_k = -mean_p log p(z_kp) - sum_i log sigma_ki - d/2 log(2 pi e).
    sigma = torch.nn.functional.softplus(rho)
    z = loc[:, None] + sigma[:, None] * eps
    log_p = torch.stack([torch.stack([run.joint.log_joint(z[k, p]) for p in range(P)]) for k in range(K)])
    expected = -log_p.mean(1) - sigma.log().sum(1) - 0.5 * d * np.log(2 * np.pi * np.e)
    np.testing.assert_allclose(compiled, expected, rtol=1e-10)


def test_a_model_fitted_on_mini_batches_runs_its_seeds_one_by_one(monkeypatch):
    # Its rows are drawn inside the model's plate, one set per call: a batch would share them.
    run = make_run("bnn_regression")
    assert batches_seeds(run)
    monkeypatch.setattr(seeds_module, "scale_plan", lambda run: {
        "subsample_size": 64, "dtype": "float64", "particles": 4, "lr_hold_fraction": 0.0})
    assert not batches_seeds(run)
    calls = []
    monkeypatch.setattr(seeds_module, "optimise", lambda run, method, seed: calls.append(seed) or seed)
    assert fit_seeds(run, [5, 6]) == [5, 6] and calls == [5, 6]
