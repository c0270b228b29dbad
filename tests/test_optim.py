"""The optimiser's promises (README, Methods): a geometric learning-rate decay from ``lr_start``
to ``lr_end``, means that step in units of sigma, and (mu, sigma) averaged over the last
quarter of the iterates."""

import math

import numpy as np
import pyro
import pytest
import torch

import study.methods.svi.loop as svi_module
from study.methods.optim import ScaledLocAdam
from study.methods.svi import optimise, run_and_average

from conftest import make_run


class _Stop(Exception):
    """Ends ``optimise`` before its first step: the schedule is fixed by then."""


def test_the_learning_rate_decays_geometrically_from_start_to_end(monkeypatch):
    handed = {}

    def capture(svi, run, method, steps, snapshot, **_):
        handed.update(optimiser=svi.optim, steps=steps)
        raise _Stop

    monkeypatch.setattr(svi_module, "run_and_average", capture)
    run = make_run("seed_linear", svi_steps=200)
    with pytest.raises(_Stop):
        optimise(run, "svi_meanfield")
    s, optimiser, steps = run.settings, handed["optimiser"], handed["steps"]
    assert isinstance(optimiser, ScaledLocAdam) and steps == 200
    # lr_t = lr_start (lr_end / lr_start)^(t / T): lr_start at the first step, lr_end after the last.
    rates = []
    for t in range(steps + 1):
        optimiser.steps = t
        rates.append(optimiser.current_lr)
    expected = s.lr_start * (s.lr_end / s.lr_start) ** (np.arange(steps + 1) / steps)
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert rates[0] == s.lr_start and rates[-1] == pytest.approx(s.lr_end, rel=1e-12)


def test_means_step_in_units_of_sigma():
    # One step of Adam from zero moments moves every parameter by lr * g / (|g| + eps) ~ lr;
    # a guide mean moves by lr * sigma instead. Two sites with sigma 0.1 and 0.001.
    from pyro.infer.autoguide import AutoNormal

    def model():
        pyro.sample("a", pyro.distributions.Normal(torch.tensor(0.0), 1.0))
        pyro.sample("b", pyro.distributions.Normal(torch.tensor(0.0), 1.0))

    pyro.clear_param_store()
    guide = AutoNormal(model, init_scale=0.1)
    guide()
    with torch.no_grad():
        guide.scales.b.fill_(0.001)  # AutoNormal stores scales through a softplus
    store = dict(pyro.get_param_store().named_parameters())
    sigma = {"a": guide.scales.a.item(), "b": guide.scales.b.item()}
    optimiser = ScaledLocAdam(guide, lr=0.01, lr_decay=0.5)
    locs = {name: store[f"{guide._pyro_name}.locs.{name}"] for name in ("a", "b")}
    before = {name: p.item() for name, p in locs.items()}
    for p in store.values():
        p.grad = torch.ones_like(p)
    optimiser(list(store.values()))
    for name in ("a", "b"):
        assert before[name] - locs[name].item() == pytest.approx(0.01 * sigma[name], rel=1e-6)
    # The second step, with the same gradient, at the decayed rate 0.01 x 0.5 (Adam's bias-corrected
    # moments of a constant gradient are g and g^2, so the step is lr again), in the new sigma.
    sigma = {"a": guide.scales.a.item(), "b": guide.scales.b.item()}
    before = {name: p.item() for name, p in locs.items()}
    optimiser(list(store.values()))
    for name in ("a", "b"):
        assert before[name] - locs[name].item() == pytest.approx(0.005 * sigma[name], rel=1e-6)


class _CountingSVI:
    """Stands in for ``pyro.infer.SVI``: step ``t`` puts the guide at mean ``t``, sd ``t + 1``."""

    def __init__(self):
        self.t = -1

    def step(self, **data):
        self.t += 1
        return 1.0


def test_the_reported_iterate_is_the_average_of_the_last_quarter():
    run = make_run("seed_linear")  # default settings: the README's "last quarter"
    svi = _CountingSVI()

    def snapshot():
        loc = torch.tensor([float(svi.t)])
        return loc, loc + 1.0, loc + 1.0

    steps = 400
    averaged = run_and_average(svi, run, "svi_meanfield", steps, snapshot)
    window = np.arange(steps)[-steps // 4:]  # steps 300 .. 399
    assert averaged.averaged_steps == steps // 4
    assert averaged.mean.item() == pytest.approx(window.mean(), rel=1e-12)
    assert averaged.spread.item() == pytest.approx(window.mean() + 1.0, rel=1e-12)
    # The halves of the window, for the drift check.
    assert averaged.sd_first.item() == pytest.approx(window[:50].mean() + 1.0, rel=1e-12)
    assert averaged.sd_second.item() == pytest.approx(window[50:].mean() + 1.0, rel=1e-12)
    assert averaged.last_loc.item() == steps - 1
    assert averaged.losses.shape == (steps,)
    assert math.isclose(np.exp(averaged.log_sd[-1, 0]), steps, rel_tol=1e-12)


def test_one_call_per_operation_gives_the_bits_of_a_loop_over_the_parameters():
    # ScaledLocAdam updates every parameter with torch._foreach_* calls. Written as a loop over
    # the parameters (as it was), the same operations in the same order must give the same
    # bits: AutoNormal's means and scales of two sites of different sizes, random gradients
    # over several steps, the means stepping in units of sigma.
    from pyro.infer.autoguide import AutoNormal
    from torch.distributions import biject_to

    run = make_run("eight_schools-eight_schools_noncentered")
    pyro.clear_param_store()
    guide = AutoNormal(run.spec.model, init_scale=0.1)
    guide(**run.data)
    optimiser = ScaledLocAdam(guide, lr=0.05, lr_decay=0.99, hold_steps=1)
    params = list(dict(pyro.get_param_store().named_parameters()).values())
    copies = {p: p.detach().clone() for p in params}
    starts = [p.detach().clone() for p in params]
    scale_of = {copies[loc]: copies[scale] for loc, scale in optimiser.scale_of.items()}
    to_scale = biject_to(guide.scale_constraint)
    moments = {}
    generator = torch.Generator().manual_seed(0)
    beta1, beta2, eps = optimiser.betas[0], optimiser.betas[1], optimiser.eps
    for t in range(1, 6):
        lr = optimiser.current_lr
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            copies[p].grad = p.grad.clone()
        optimiser(set(params))
        sigma = {loc: to_scale(scale).clone() for loc, scale in scale_of.items()}
        for p in copies.values():
            m, v = moments.get(p) or (torch.zeros_like(p), torch.zeros_like(p))
            m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
            moments[p] = (m, v)
            step = lr * (m / (1.0 - beta1**t)) / ((v / (1.0 - beta2**t)).sqrt() + eps)
            if p in sigma:
                step = step * sigma[p]
            p.sub_(step)
        for p in params:
            assert torch.equal(p.detach(), copies[p]), t
    assert scale_of and all(not torch.equal(p.detach(), start) for p, start in zip(params, starts))
