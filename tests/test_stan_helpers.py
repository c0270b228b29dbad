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


def _log_domain_forward(log_emission, log_transition):
    """Stan's recursion in logs, vectorised over the batch: the reference for the scaled scan."""
    gamma = log_emission[..., 0, :]
    for t in range(1, log_emission.shape[-2]):
        gamma = torch.logsumexp(gamma.unsqueeze(-1) + log_transition, -2) + log_emission[..., t, :]
    return torch.logsumexp(gamma, -1)


@pytest.mark.parametrize("spread", [1.0, 300.0])
def test_forward_algorithm_gradients_and_hessian_are_the_log_domain_ones(spread):
    # Emissions spread over hundreds of nats and a transition of probability 1e-6: the scan in
    # probabilities rescales every product, so nothing underflows that the logs would keep.
    generator = torch.Generator().manual_seed(3)
    log_emission = spread * torch.randn(2, 40, 2, generator=generator, dtype=torch.float64)
    log_transition = torch.tensor([[1 - 1e-6, 1e-6], [0.3, 0.7]], dtype=torch.float64).log().repeat(2, 1, 1)
    expected = _log_domain_forward(log_emission, log_transition)
    torch.testing.assert_close(hmm_log_likelihood(log_emission, log_transition), expected, rtol=1e-12, atol=1e-9)
    for argnum in (0, 1):
        def f(x, argnum=argnum, fn=hmm_log_likelihood):
            args = [log_emission, log_transition]
            args[argnum] = x
            return fn(*args).sum()
        x = (log_emission, log_transition)[argnum]
        torch.testing.assert_close(torch.func.grad(f)(x), torch.func.grad(partial_ref(f))(x), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(torch.func.hessian(f)(x), torch.func.hessian(partial_ref(f))(x),
                                   rtol=1e-8, atol=1e-9)


def partial_ref(f):
    """``f`` with the reference recursion in place of ``hmm_log_likelihood``."""
    return lambda x: f(x, fn=_log_domain_forward)


def test_forward_algorithm_gives_the_lowest_value_where_a_step_is_impossible():
    # An impossible point gets the lowest float (nan_to_num's stand-in for -inf), as before.
    log_emission = torch.zeros(3, 6, 2, dtype=torch.float64)
    log_emission[1, 4, :] = -float("inf")  # no state can emit the fifth observation
    log_emission[2, 2, 0] = -float("inf")  # one state cannot: still possible
    log_transition = torch.full((2, 2), 0.5, dtype=torch.float64).log()
    got = hmm_log_likelihood(log_emission, log_transition)
    assert got[1] == torch.finfo(torch.float64).min and torch.isfinite(got[[0, 2]]).all()
    torch.testing.assert_close(got[[0, 2]], _log_domain_forward(log_emission[[0, 2]], log_transition))


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
