"""The Stan constructs of models/_stan.py against naive loops written as in the Stan programs."""

import pytest
import torch
from torch.distributions import constraints

import math

import pyro
import pyro.distributions as dist

from models._stan import NormalMix2, RestrictedNormal, hmm_log_likelihood, linear_recurrence, ordered_normal


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


def _torch_mixture(theta, loc, scale):
    logits = torch.stack([theta.log(), torch.log1p(-theta)], dim=-1)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, scale))


def test_two_normal_mixture_is_torchs_mixture_in_value_and_gradient():
    torch.manual_seed(0)
    theta = torch.rand(7, 1, dtype=torch.float64).mul(0.9).add(0.05).requires_grad_()
    loc = torch.randn(7, 1, 2, dtype=torch.float64).mul(3).requires_grad_()
    scale = torch.rand(7, 1, 2, dtype=torch.float64).add(0.1).requires_grad_()
    y = torch.randn(50, dtype=torch.float64).mul(4)
    ours = NormalMix2(theta, loc, scale).expand((7, 50))
    theirs = _torch_mixture(theta, loc, scale).expand((7, 50))
    assert ours.batch_shape == theirs.batch_shape == (7, 50)
    a, b = ours.log_prob(y), theirs.log_prob(y)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grads_a = torch.autograd.grad(a.sum(), (theta, loc, scale))
    grads_b = torch.autograd.grad(b.sum(), (theta, loc, scale))
    for g_a, g_b in zip(grads_a, grads_b):
        torch.testing.assert_close(g_a, g_b, rtol=1e-10, atol=1e-12)
    # A point far in one component's tail: the log-sum-exp keeps it finite.
    far = NormalMix2(theta[0, 0], loc[0, 0], scale[0, 0]).log_prob(torch.tensor(1e4, dtype=torch.float64))
    assert torch.isfinite(far)
    with pytest.raises(ValueError, match="2 components"):
        NormalMix2(theta, loc[..., :1], scale)


def test_two_normal_mixture_samples_have_the_mixtures_mean_and_variance():
    torch.manual_seed(1)
    theta, loc, scale = torch.tensor(0.3), torch.tensor([-1.0, 2.0]), torch.tensor([0.5, 1.5])
    n = 200_000
    x = NormalMix2(theta, loc, scale).sample((n,))
    mean = theta * loc[0] + (1 - theta) * loc[1]
    second = theta * (scale[0] ** 2 + loc[0] ** 2) + (1 - theta) * (scale[1] ** 2 + loc[1] ** 2)
    var = second - mean**2
    # 5 Monte Carlo SEs: a false alarm about once in 10^6 runs.
    assert abs(float(x.mean() - mean)) < 5 * math.sqrt(var / n)
    assert abs(float(x.var() - var)) < 5 * float(((x - x.mean()) ** 2).std()) / math.sqrt(n)


def test_two_normal_mixture_lines_up_with_the_data_plate_under_vectorised_particles():
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    y = torch.randn(30, dtype=torch.float64)

    def model(y, mixture):
        theta = pyro.sample("theta", dist.Beta(torch.tensor(5.0, dtype=y.dtype), 5.0))
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2, dtype=y.dtype), 2.0).to_event(1))
        with pyro.plate("data", y.shape[-1]):
            pyro.sample("y", mixture(theta, loc, torch.ones(2, dtype=y.dtype)), obs=y)

    losses = []
    for mixture in (NormalMix2, _torch_mixture):
        pyro.clear_param_store()
        guide = AutoNormal(lambda y: model(y, mixture))
        pyro.set_rng_seed(3)
        elbo = Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
        losses.append(elbo.loss(lambda y: model(y, mixture), guide, y))
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)
