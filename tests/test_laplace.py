"""Laplace from the exact Hessian, and laplace-torch, against closed forms."""

import numpy as np
import pytest
import torch

from models._glm import posterior_precision
from models.linear_correlated import NOISE_SCALE, PRIOR_SCALE
from study.methods.laplace import fit_laplace_diag, fit_laplace_full, map_and_hessian
from study.methods.laplace_torch import fit_laplace_torch_diag, fit_laplace_torch_full

from conftest import make_run


@pytest.fixture(scope="module")
def linear():
    run = make_run("linear_correlated")
    precision = posterior_precision(run.data["X"], PRIOR_SCALE, NOISE_SCALE).numpy()
    return run, precision


def test_laplace_full_is_the_exact_marginal_sd(linear):
    run, precision = linear
    fit = fit_laplace_full(run)
    exact = np.sqrt(np.diag(np.linalg.inv(precision)))
    np.testing.assert_allclose(fit.sd, exact, rtol=1e-6)
    posterior = run.spec.exact_posterior(run.data)
    np.testing.assert_allclose(fit.mean, posterior.mean.numpy(), rtol=1e-6, atol=1e-9)


def test_laplace_diag_is_one_over_root_precision_diagonal(linear):
    run, precision = linear
    fit = fit_laplace_diag(run)
    np.testing.assert_allclose(fit.sd, 1.0 / np.sqrt(np.diag(precision)), rtol=1e-6)


def test_diag_is_below_full_when_correlated(linear):
    run, _ = linear
    full, diag = fit_laplace_full(run), fit_laplace_diag(run)
    assert np.all(diag.sd < full.sd)  # PRML 10.1.2: conditional sd < marginal sd


@pytest.mark.parametrize("name", ["linear_correlated", "seed_linear", "logistic_breast_cancer"])
def test_laplace_torch_agrees_with_exact_hessian_on_glms(name):
    # For a GLM the GGN laplace-torch uses is the exact Hessian of -log p.
    run = make_run(name)
    np.testing.assert_allclose(fit_laplace_torch_full(run).sd, fit_laplace_full(run).sd, rtol=1e-6)
    np.testing.assert_allclose(fit_laplace_torch_diag(run).sd, fit_laplace_diag(run).sd, rtol=1e-6)


def test_map_is_a_stationary_point_with_positive_definite_hessian():
    run = make_run("logistic_breast_cancer")
    found = map_and_hessian(run)
    assert found["grad_norm"] < 1e-6
    assert torch.linalg.eigvalsh(found["hessian"])[0] > 0
