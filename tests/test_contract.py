"""Every built-in model meets the contract of models/model_contract.md."""

import pytest
import torch

from models import GaussianPosterior, ModelSpec
from study.core.joint import FlatJoint
from study.methods.laplace_torch import _flat_index

from conftest import HAVE_POSTERIORDB, make_run, skip_or_fail

from models import builtin_models

# The larger rungs of the network ladder (10^4 weights and up) cost seconds to minutes and
# gigabytes each here: they are checked in the slow suite.
ALL = [
    pytest.param(name, marks=pytest.mark.slow) if "on_request" in spec.tags else name
    for name, spec in builtin_models().items()
]


def _available(name):
    spec = builtin_models()[name]
    if spec.needs_posteriordb:
        skip_or_fail("posteriordb")
    return spec


def test_the_issue_models_are_built_in():
    expected = {
        "seed_linear", "linear_correlated", "logistic_breast_cancer", "sblrc-blr",
        "eight_schools-eight_schools_noncentered", "kilpisjarvi_mod-kilpisjarvi", "arK-arK", "bnn_regression",
    }
    names = {p.values[0] if hasattr(p, "values") else p for p in ALL}  # pytest.param for slow rungs
    assert expected <= names


@pytest.mark.parametrize("name", ALL)
def test_spec_data_and_description(name):
    spec = _available(name)
    assert isinstance(spec, ModelSpec) and spec.name == name
    assert spec.description.strip(), "the model file's docstring describes the model"
    data = spec.data()
    assert isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values())


@pytest.mark.parametrize("name", ALL)
def test_vectorised_particles_count_the_likelihood_once(name):
    # The ELBO evaluates the model with a leading particle dimension; it must give
    # exactly the per-sample log joint, or sigma shrinks by sqrt(particles).
    spec = _available(name)
    joint = FlatJoint(spec.model, spec.data(), spec.init_loc_fn)
    generator = torch.Generator().manual_seed(0)
    z = joint.init_z + 0.1 * torch.randn(5, joint.dim, generator=generator)
    batched = joint.log_joint_batched(z)
    single = torch.stack([joint.log_joint(zi) for zi in z])
    torch.testing.assert_close(batched, single, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("name", ALL)
def test_optional_fields_have_the_right_shapes(name):
    spec = _available(name)
    run = make_run(name)
    d = run.joint.dim
    if spec.exact_posterior is not None:
        posterior = spec.exact_posterior(run.data)
        assert isinstance(posterior, GaussianPosterior)
        assert posterior.mean.shape == (d,) and posterior.covariance.shape == (d, d)
    # posteriordb's gold draws are read from a clone (the project ships their summaries).
    if spec.reference_draws is not None and (HAVE_POSTERIORDB or not spec.posteriordb):
        z = run.joint.unconstrain(spec.reference_draws(run.data))
        assert z.shape[1] == d and torch.isfinite(z).all()
    if spec.laplace_torch is not None:
        problem = spec.laplace_torch(run.data)
        index = _flat_index(run, problem.module, problem.site_of_parameter)
        assert sorted(index.tolist()) == list(range(d))
