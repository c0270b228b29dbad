"""The Stan constructs of models/_stan.py against naive loops written as in the Stan programs."""

import pytest
import torch
from torch.distributions import constraints

from models._stan import RestrictedNormal, hmm_log_likelihood, linear_recurrence, ordered_normal


@pytest.mark.parametrize("T", [1, 2, 7, 200])
def test_linear_recurrence_is_the_loop(T):
    generator = torch.Generator().manual_seed(T)
    a = torch.tensor([[-1.3], [-0.95], [0.0], [0.7], [0.99], [1.2]])
    b = torch.randn(6, T, generator=generator)
    x = [b[:, 0]]
    for t in range(1, T):
        x.append(a[:, 0] * x[-1] + b[:, t])
    torch.testing.assert_close(linear_recurrence(a, b), torch.stack(x, -1), rtol=1e-12, atol=1e-12)
    # A scalar coefficient (no batch) gives the same numbers.
    torch.testing.assert_close(linear_recurrence(a[3, 0], b[3]), torch.stack(x, -1)[3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N", [1, 2, 5, 64])
def test_forward_algorithm_is_stans_loop(N):
    generator = torch.Generator().manual_seed(N)
    K = 3
    log_emission = torch.randn(4, N, K, generator=generator)
    log_transition = torch.softmax(torch.randn(4, K, K, generator=generator), -1).log()
    expected = []
    for s in range(4):  # Stan: gamma[t, k] = log_sum_exp_j(gamma[t-1, j] + log theta[j, k]) + e[t, k]
        gamma = log_emission[s, 0]
        for t in range(1, N):
            gamma = torch.stack([torch.logsumexp(gamma + log_transition[s, :, k] + log_emission[s, t, k], 0)
                                 for k in range(K)])
        expected.append(torch.logsumexp(gamma, 0))
    torch.testing.assert_close(hmm_log_likelihood(log_emission, log_transition), torch.stack(expected),
                               rtol=1e-12, atol=1e-12)


def test_restricted_normal_is_the_unnormalised_normal_on_its_support():
    loc, scale = torch.tensor([0.0, 3.0]), torch.tensor([1.0, 0.5])
    value = torch.tensor([[0.5, 2.0], [1.0, 4.0]])
    prior = ordered_normal(loc, scale, positive=True)
    assert prior.event_shape == (2,) and prior.batch_shape == ()
    expected = torch.distributions.Normal(loc, scale).log_prob(value).sum(-1)
    torch.testing.assert_close(prior.log_prob(value), expected)
    assert prior.expand((5,)).batch_shape == (5,)
    positive = RestrictedNormal(loc, scale, constraints.independent(constraints.positive, 1))
    assert positive.event_shape == (2,)
    with pytest.raises(NotImplementedError):
        prior.sample()
