"""``models._linear``: the matrix-product linear predictor against the broadcast sum, and
``NormalLinear`` (the Gaussian regression likelihood from sufficient statistics) against
the per-row Normal densities it stands for."""

import pyro.distributions as dist
import pytest
import torch

from models._linear import NormalLinear, linear


@pytest.mark.parametrize("batch", [(), (7, 1), (3, 2, 1)])
def test_linear_equals_the_broadcast_sum(batch):
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(11, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(batch + (4,), generator=generator, dtype=torch.float64)
    expected = (X * w).sum(-1)
    got = linear(X, w)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_linear_refuses_a_batch_that_would_not_line_up_with_the_plate():
    with pytest.raises(ValueError, match="expected"):
        linear(torch.ones(5, 3), torch.ones(5, 3))


def _per_row(X, y, coef, sigma, intercept=None):
    """The plate form: ``sum_n Normal(intercept + X_n . coef, sigma).log_prob(y_n)``."""
    loc = linear(X, coef.unsqueeze(-2))
    if intercept is not None:
        loc = loc + intercept.unsqueeze(-1)
    return dist.Normal(loc, sigma.unsqueeze(-1)).log_prob(y).sum(-1)


def _regression(n=200, k=4, offset=0.0, noise=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, k, generator=generator, dtype=torch.float64)
    y = offset + X @ torch.arange(1.0, k + 1, dtype=torch.float64) + noise * torch.randn(n, generator=generator,
                                                                                          dtype=torch.float64)
    return X, y, generator


@pytest.mark.parametrize("batch", [(), (7,), (3, 2)])
@pytest.mark.parametrize("with_intercept", [False, True])
def test_normal_linear_equals_the_per_row_normal_densities_and_their_gradients(batch, with_intercept):
    X, y, generator = _regression()
    coef = (torch.arange(1.0, 5.0, dtype=torch.float64)
            + 0.3 * torch.randn(batch + (4,), generator=generator, dtype=torch.float64)).requires_grad_()
    sigma = torch.exp(0.3 * torch.randn(batch, generator=generator, dtype=torch.float64)).requires_grad_()
    intercept = torch.randn(batch, generator=generator, dtype=torch.float64).requires_grad_() if with_intercept else None
    expected = _per_row(X, y, coef, sigma, intercept)
    got = NormalLinear(X, coef, sigma, intercept=intercept).log_prob(y)
    assert got.shape == expected.shape == torch.Size(batch)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)
    inputs = [coef, sigma] + ([intercept] if with_intercept else [])
    for a, b in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(expected.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-8)


def test_normal_linear_keeps_its_precision_when_the_residuals_are_small_next_to_y():
    # y ~ 1e6 with noise 1e-3: the naive y'y - 2 b'X'y + b'X'X b would lose 18 digits.
    X, y, generator = _regression(offset=1e6, noise=1e-3)
    intercept = torch.tensor([1e6, 1e6 + 1e-3], dtype=torch.float64)
    coef = torch.arange(1.0, 5.0, dtype=torch.float64).expand(2, 4)
    sigma = torch.full((2,), 1e-3, dtype=torch.float64)
    expected = _per_row(X, y, coef, sigma, intercept)
    got = NormalLinear(X, coef, sigma, intercept=intercept).log_prob(y)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-6)


def test_normal_linear_recomputes_its_statistics_when_the_data_change_in_place():
    X, y, _ = _regression()
    coef, sigma = torch.ones(4, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    before = NormalLinear(X, coef, sigma).log_prob(y)
    y.add_(1.0)
    after = NormalLinear(X, coef, sigma).log_prob(y)
    torch.testing.assert_close(after, _per_row(X, y, coef, sigma))
    assert not torch.isclose(before, after)


def test_normal_linear_samples_the_regression_and_refuses_mismatched_shapes():
    X, y, _ = _regression(n=50, k=2)
    d = NormalLinear(X, torch.zeros(3, 2, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                     intercept=torch.full((3,), 5.0, dtype=torch.float64))
    draws = d.sample((4000,))
    assert draws.shape == (4000, 3, 50)
    # Mean 5 and sd 1 per row: 4000 draws give the grand mean an SE of 1/sqrt(4000 * 150) ~ 1.3e-3;
    # 5 SE keeps a false failure below one in a million.
    assert abs(float(draws.mean()) - 5.0) < 5 * (1.0 / (4000 * 150) ** 0.5)
    with pytest.raises(ValueError, match="do not match"):
        NormalLinear(X, torch.zeros(3), torch.ones(()))
    with pytest.raises(ValueError, match="observations of shape"):
        NormalLinear(X, torch.zeros(2, dtype=torch.float64), torch.ones((), dtype=torch.float64)).log_prob(y[:10])
