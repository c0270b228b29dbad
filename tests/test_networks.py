"""The network ladder: one nn.Module, lifted into Pyro, seen by laplace-torch; its selection."""

import pytest
import torch

from models import builtin_models, default_models, model_groups
from models._mlp import CLASSIFICATION, REGRESSION, NetworkModel, apply_module, make_mlp, weight_count
from study.compare import build_parser, resolve_sources
from study.core.joint import FlatJoint


def _tiny_data(likelihood, n=40, inputs=5, outputs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, inputs, generator=g)
    if likelihood == CLASSIFICATION:
        y = torch.randint(0, outputs, (n,), generator=g)
    else:
        y = torch.randn(n, generator=g)
    return {"X": X, "y": y}


@pytest.mark.parametrize("likelihood,sizes", [(CLASSIFICATION, [5, 7, 3]), (REGRESSION, [5, 7, 4, 1])])
def test_pyro_model_and_module_give_the_same_log_joint(likelihood, sizes):
    model = NetworkModel(sizes, likelihood, prior_precision=2.5, noise_scale=0.3)
    data = _tiny_data(likelihood, outputs=sizes[-1])
    joint = FlatJoint(model, data)
    assert joint.dim == weight_count(sizes) == model.dim
    z = torch.randn(4, joint.dim, generator=torch.Generator().manual_seed(1))
    problem = model.laplace_torch(data)
    module = problem.module
    for zi, batched in zip(z, joint.log_joint_batched(z)):
        # Flat latents and laplace-torch's parameter vector are in the same order.
        torch.nn.utils.vector_to_parameters(zi, module.parameters())
        expected = model.log_joint_of_module(module, data["X"], data["y"])
        torch.testing.assert_close(joint.log_joint(zi), expected, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(batched, expected, rtol=1e-12, atol=1e-9)


def test_module_outputs_match_under_vectorised_particles():
    module = make_mlp([5, 6, 2]).double()
    X = torch.randn(9, 5)
    params = {k: torch.randn((3, 1) + v.shape) for k, v in module.named_parameters()}
    out = apply_module(module, params, X)
    assert out.shape == (3, 9, 2)
    for p in range(3):
        one = torch.func.functional_call(module, {k: v[p, 0] for k, v in params.items()}, (X,))
        torch.testing.assert_close(out[p], one)


def test_one_weight_set_runs_the_operations_of_functional_call_bit_for_bit():
    # apply_module writes one weight set's forward pass out layer by layer, so that the MAP
    # search can trace it (functional_call cannot be traced); value and gradient must be
    # functional_call's to the last bit, or the MAP would move.
    module = make_mlp([5, 7, 4, 2]).double().requires_grad_(False)  # as NetworkModel holds it
    X = torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = {k: torch.randn(v.shape, dtype=torch.float64, requires_grad=True)
              for k, v in module.named_parameters()}
    out = apply_module(module, params, X)
    grads = torch.autograd.grad(torch.tanh(out).sum(), list(params.values()))
    reference = torch.func.functional_call(module, params, (X,))
    reference_grads = torch.autograd.grad(torch.tanh(reference).sum(), list(params.values()))
    assert torch.equal(out, reference)
    assert all(torch.equal(a, b) for a, b in zip(grads, reference_grads))
    fixed = {k: v.detach() for k, v in params.items()}
    traced = torch.jit.trace(lambda x: apply_module(module, fixed, x), (X,))
    assert torch.equal(traced(X), reference.detach())


def test_a_module_with_other_parametrised_layers_goes_through_functional_call():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1)).double()
    X = torch.randn(6, 3, dtype=torch.float64)
    params = {k: torch.randn(v.shape, dtype=torch.float64) for k, v in module.named_parameters()}
    assert torch.equal(apply_module(module, params, X), torch.func.functional_call(module, params, (X,)))


def test_a_misaligned_particle_batch_is_refused():
    module = make_mlp([5, 6, 2]).double()
    params = {k: torch.randn((3,) + v.shape) for k, v in module.named_parameters()}
    with pytest.raises(ValueError, match=r"batch shape \(3,\)"):
        apply_module(module, params, torch.randn(9, 5))


def test_the_ladder_spans_three_decades_and_its_small_rungs_join_the_default_study():
    specs = builtin_models()
    networks = model_groups()["networks"]
    dims = {name: specs[name].model.dim for name in networks}
    assert dims["digits_mlp_1k"] == 1_210 and dims["digits_mlp_100k"] == 112_510
    for family in ("digits", "diabetes"):
        rungs = sorted(d for n, d in dims.items() if n.startswith(family))
        assert rungs[0] < 2_000 and any(5_000 < d < 20_000 for d in rungs) and any(d > 50_000 for d in rungs)
    default = set(default_models())
    assert {"digits_mlp_1k", "diabetes_mlp_1k"} <= default
    assert not default & {n for n in networks if not n.endswith("_1k")}


def test_networks_are_one_selection_away():
    sources = resolve_sources(build_parser().parse_args(["--models", "networks"]))
    assert sources == model_groups()["networks"] and "digits_mlp_100k" in sources
    # A model named alone and through its group runs once.
    sources = resolve_sources(build_parser().parse_args(["--models", "seed_linear", "digits_mlp_1k", "networks"]))
    assert sources.count("digits_mlp_1k") == 1 and sources[0] == "seed_linear"
    assert "digits_mlp_10k" not in resolve_sources(build_parser().parse_args([]))
