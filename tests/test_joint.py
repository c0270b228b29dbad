"""The log joint in unconstrained coordinates against a hand-written density.

A positive site ``s ~ HalfNormal(2)`` lives in the guide's space as ``z = log s``;
its density there is ``p_s(exp z) exp(z)``, the last factor being the Jacobian
``|ds/dz|`` (e.g. Bishop, PRML eq. 1.27). The hand-written ``-log p`` below spells
that out; its derivatives come from ``torch.autograd.functional``, not from the
study's code.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from study.core.joint import FlatJoint

PRIOR_SCALE = 2.0  # of the half-normal scale


def model(y):
    s = pyro.sample("s", dist.HalfNormal(torch.tensor(PRIOR_SCALE)))
    m = pyro.sample("m", dist.Normal(torch.tensor(0.0), 1.0))
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(m, s), obs=y)


Y = torch.tensor([0.3, -1.2, 2.1, 0.8, 1.5, -0.4, 0.9])


def negative_log_joint(z: torch.Tensor) -> torch.Tensor:
    """``-log p(z, y)`` with ``z = (log s, m)``, written out by hand (log-Jacobian included)."""
    log_s, m = z[0], z[1]
    s = torch.exp(log_s)
    log_half_normal = math.log(2.0) - math.log(PRIOR_SCALE) - 0.5 * math.log(2 * math.pi) - s**2 / (2 * PRIOR_SCALE**2)
    log_normal_m = -0.5 * math.log(2 * math.pi) - m**2 / 2
    log_likelihood = (-0.5 * math.log(2 * math.pi) - log_s - (Y - m) ** 2 / (2 * s**2)).sum()
    log_jacobian = log_s  # d exp(z) / dz = exp(z)
    return -(log_half_normal + log_normal_m + log_likelihood + log_jacobian)


@pytest.fixture(scope="module")
def joint():
    return FlatJoint(model, {"y": Y})


POINTS = torch.tensor([[0.0, 0.0], [-0.7, 0.4], [1.1, -0.9], [0.35, 0.62]])


def test_the_positive_site_is_stored_as_its_log(joint):
    assert joint.param_names == ["s (log)", "m"]
    z = torch.tensor([-0.7, 0.4])
    assert joint.constrain(z)["s"].item() == pytest.approx(math.exp(-0.7), rel=1e-15)
    s = torch.tensor([[0.5], [3.0]])
    np.testing.assert_allclose(joint.unconstrain({"s": s[:, 0], "m": torch.zeros(2)})[:, 0].numpy(), np.log([0.5, 3.0]))


@pytest.mark.parametrize("index", range(len(POINTS)))
def test_log_joint_and_its_derivatives_are_the_hand_written_ones(joint, index):
    z = POINTS[index]
    expected = negative_log_joint(z)
    assert -joint.log_joint(z).item() == pytest.approx(expected.item(), rel=1e-12)
    potential, grad = joint.potential_and_grad(z)
    assert potential.item() == pytest.approx(expected.item(), rel=1e-12)
    expected_grad = torch.autograd.functional.jacobian(negative_log_joint, z)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    expected_hessian = torch.autograd.functional.hessian(negative_log_joint, z)
    torch.testing.assert_close(joint.hessian(z), expected_hessian, rtol=1e-12, atol=1e-12)


def test_the_vectorised_paths_agree_with_the_hand_written_density(joint):
    expected = torch.stack([negative_log_joint(z) for z in POINTS])
    torch.testing.assert_close(-joint.log_joint_batched(POINTS), expected, rtol=1e-12, atol=1e-12)
    diagonal = torch.stack([torch.autograd.functional.hessian(negative_log_joint, z).diagonal() for z in POINTS])
    torch.testing.assert_close(joint.hessian_diagonal_batched(POINTS), diagonal, rtol=1e-12, atol=1e-12)


def test_the_jacobian_term_is_there(joint):
    # Without log|ds/dz| the density would differ by exactly z_0 = log s: a second, numerical
    # witness that the term is included and has the right sign.
    z = torch.tensor([0.9, 0.1])
    without = negative_log_joint(z) + z[0]
    assert -joint.log_joint(z).item() == pytest.approx(without.item() - 0.9, rel=1e-12)
