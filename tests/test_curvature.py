"""Curvature references without d x d matrices, checked against naive dense recomputations on a tiny MLP."""


import numpy as np
import pytest
import torch

from models._mlp import CLASSIFICATION, REGRESSION, network_spec
from study.checks.fixed_point import expected_curvature, expected_curvature_subset
from study.core.context import ModelRun
from study.core.results import OK, SKIPPED
from study.core.settings import Settings
from study.core.subset import coordinate_subset
from study.methods import curvature, size_guard
from study.methods.curvature import hessian_diagonal, kron_marginal_variance, site_means
def _tiny_data(likelihood, n=30, inputs=4, outputs=3):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, inputs, generator=g)
    if likelihood == CLASSIFICATION:
        y = torch.randint(0, outputs, (n,), generator=g)
    else:
        y = torch.sin(X[:, 0]) + 0.3 * torch.randn(n, generator=g)
    return {"X": X, "y": y}


def _tiny_run(likelihood=CLASSIFICATION, sizes=(4, 6, 3), prior_precision=2.0, noise=0.5):
    data = _tiny_data(likelihood, inputs=sizes[0], outputs=sizes[-1])
    spec = network_spec("tiny_mlp", "tiny MLP", list(sizes), likelihood, lambda: data, "synthetic",
                        prior_precision=prior_precision, noise_scale=noise)
    run = ModelRun.create(spec, Settings.make(quick=True))
    # A point that is not a stationary point: the identities hold everywhere.
    z = run.joint.init_z + 0.3 * torch.randn(run.joint.dim, generator=torch.Generator().manual_seed(3))
    run.cache["map"] = {"z": z, "hessian": None}
    return run, z


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_batched_hessian_diagonal_equals_the_dense_hessians_diagonal(chunk):
    run, z = _tiny_run()
    dense = run.joint.hessian(z)
    torch.testing.assert_close(hessian_diagonal(run.joint, z, chunk=chunk), torch.diagonal(dense), rtol=1e-10, atol=1e-10)
    some = np.array([0, 5, 17, run.joint.dim - 1])
    torch.testing.assert_close(hessian_diagonal(run.joint, z, some, chunk=chunk), torch.diagonal(dense)[some],
                               rtol=1e-10, atol=1e-10)


def _naive_ggn_diagonal(problem, module):
    """diag(sum_n J_n^T Lambda_n J_n) from the full Jacobian of the outputs: the textbook GGN."""
    params = dict(module.named_parameters())
    names = list(params)

    def outputs(*flat):
        return torch.func.functional_call(module, dict(zip(names, flat)), (problem.inputs,))

    jac = torch.autograd.functional.jacobian(outputs, tuple(params[k].detach() for k in names))
    J = torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac], dim=-1)  # (N, K, P)
    f = outputs(*(params[k].detach() for k in names))
    if problem.likelihood == CLASSIFICATION:
        p = torch.softmax(f, -1)
        Lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        Lam = torch.eye(f.shape[-1]).expand(f.shape[0], -1, -1) / problem.sigma_noise**2
    return torch.einsum("nkp,nkl,nlp->p", J, Lam, J)


@pytest.mark.parametrize("likelihood,sizes", [(CLASSIFICATION, (4, 6, 3)), (REGRESSION, (4, 6, 1))])
def test_ggn_diag_is_one_over_sqrt_of_the_naive_ggn_diagonal_plus_prior(likelihood, sizes):
    run, z = _tiny_run(likelihood, sizes)
    fit = curvature.fit_ggn_diag(run)
    problem = run.spec.laplace_torch(run.data)
    module = problem.module.to(torch.float64)
    torch.nn.utils.vector_to_parameters(z, module.parameters())
    ggn = _naive_ggn_diagonal(problem, module).numpy()
    np.testing.assert_allclose(fit.info["ggn_diagonal"], ggn, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.sd, 1.0 / np.sqrt(ggn + problem.prior_precision), rtol=1e-8)
    assert fit.info["at"] == "MAP" and fit.info["backend"] == "BackPackGGN"


def test_kron_marginal_variances_equal_the_dense_inverse_diagonal():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g)
    B = torch.randn(4, 4, generator=g)
    A, B = A @ A.T, B @ B.T  # positive semi-definite factors
    scale, prior = 0.7, 1.3
    dense = torch.linalg.inv(scale * torch.kron(A, B) + prior * torch.eye(20))
    torch.testing.assert_close(kron_marginal_variance([A, B], scale, prior)[0], torch.diagonal(dense))
    dense_bias = torch.linalg.inv(scale * A + prior * torch.eye(5))
    torch.testing.assert_close(kron_marginal_variance([A], scale, prior)[0], torch.diagonal(dense_bias))


def _low_rank_factor(n, rank, seed):
    U = torch.randn(n, rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return U @ U.T


def test_low_rank_factors_give_the_dense_inverse_diagonal():
    """A factor of rank 3 in 60 dimensions, decomposed thin: its null space enters as one column."""
    A = _low_rank_factor(5, 5, 0)
    B = _low_rank_factor(60, 3, 1)
    scale, prior = 0.7, 1.3
    variance, how = kron_marginal_variance([A, B], scale, prior, rank_bound=3)
    assert how == ["dense", "low rank"]  # 3 + 16 columns <= 60 / 2; the 5 x 5 factor is dense
    dense = torch.linalg.inv(scale * torch.kron(A, B) + prior * torch.eye(300, dtype=torch.float64))
    torch.testing.assert_close(variance, torch.diagonal(dense), rtol=1e-10, atol=0)
    # Both factors thin, and the one-factor (bias) block.
    C = _low_rank_factor(50, 2, 2)
    variance, how = kron_marginal_variance([C, B], scale, prior, rank_bound=3)
    assert how == ["low rank", "low rank"]
    dense = torch.linalg.inv(scale * torch.kron(C, B) + prior * torch.eye(3000, dtype=torch.float64))
    torch.testing.assert_close(variance, torch.diagonal(dense), rtol=1e-10, atol=0)
    variance, how = kron_marginal_variance([B], scale, prior, rank_bound=3)
    assert how == ["low rank"]
    torch.testing.assert_close(variance, torch.diagonal(torch.linalg.inv(scale * B + prior * torch.eye(60, dtype=torch.float64))),
                               rtol=1e-10, atol=0)


def test_a_wrong_rank_bound_falls_back_to_the_dense_decomposition():
    """A full-rank factor claimed to have rank 3: the check on fresh directions catches it."""
    B = _low_rank_factor(60, 60, 1)
    variance, how = kron_marginal_variance([B], 0.7, 1.3, rank_bound=3)
    assert how == ["dense"]
    torch.testing.assert_close(variance, torch.diagonal(torch.linalg.inv(0.7 * B + 1.3 * torch.eye(60, dtype=torch.float64))),
                               rtol=1e-10, atol=0)


@pytest.mark.parametrize("likelihood,sizes", [(CLASSIFICATION, (4, 6, 3)), (REGRESSION, (4, 6, 1)),
                                              # 120 hidden units > 2 (30 rows x 1 output + 16): thin factors
                                              (REGRESSION, (4, 120, 1))])
def test_kfac_fit_matches_laplace_torchs_dense_kronecker_posterior(likelihood, sizes):
    from laplace import Laplace
    from laplace.curvature import CurvlinopsGGN
    from torch.utils.data import DataLoader, TensorDataset

    run, z = _tiny_run(likelihood, sizes)
    fit = curvature.fit_kfac(run)
    problem = run.spec.laplace_torch(run.data)
    module = problem.module.to(torch.float64)
    torch.nn.utils.vector_to_parameters(z, module.parameters())
    kwargs = {"sigma_noise": problem.sigma_noise} if likelihood == REGRESSION else {}
    la = Laplace(module, likelihood, subset_of_weights="all", hessian_structure="kron", backend=CurvlinopsGGN,
                 prior_precision=problem.prior_precision, **kwargs)
    targets = problem.targets if likelihood == CLASSIFICATION else problem.targets.double()
    la.fit(DataLoader(TensorDataset(problem.inputs, targets), batch_size=len(problem.inputs)))
    # laplace-torch's own dense posterior precision, inverted densely (fine at d <= 200).
    dense = torch.linalg.inv(la.posterior_precision.to_matrix())
    np.testing.assert_allclose(fit.sd, torch.diagonal(dense).sqrt().numpy(), rtol=1e-7)
    thin = sizes[1] >= 2 * (30 * sizes[-1] + 16)
    assert ("low rank" in sum(fit.info["factor_decompositions"], [])) == thin


def test_last_layer_laplace_covers_the_last_layer_only():
    run, z = _tiny_run()
    fit = curvature.fit_laplace_last_layer(run)
    last = run.joint.site("W2").offset
    assert np.isnan(fit.sd[:last]).all() and np.isfinite(fit.sd[last:]).all() and (fit.sd[last:] > 0).all()
    assert fit.info["last_layer_weights"] == 6 * 3 + 3


def test_subset_site_means_cover_the_full_means_within_their_standard_error():
    run, z = _tiny_run(sizes=(6, 20, 3))  # W1: 120, b1: 20, W2: 60, b2: 3 -> d = 203
    full = hessian_diagonal(run.joint, z).numpy()
    subset = coordinate_subset(run.joint, 30, seed=11)
    estimate = site_means(run.joint, subset, full[subset])
    truth = site_means(run.joint, np.arange(run.joint.dim), full)
    for site, e in estimate.items():
        error = abs(e["mean"] - truth[site]["mean"])
        if e["measured"] == e["size"]:
            assert e["se"] == 0.0 and error < 1e-12
        else:
            # The sample mean of a simple random sample is unbiased with this SE (finite-population
            # corrected). 4 SE, two sites tested: a false alarm under normality about 2 x 6e-5.
            assert e["se"] > 0 and error <= 4 * e["se"], (site, error, e["se"])


def test_fixed_point_curvature_on_a_subset_equals_the_full_computation_there():
    run, z = _tiny_run()
    mean, sd = z.numpy(), np.full(run.joint.dim, 0.2)
    full = expected_curvature(run.joint, mean, sd, draws=32, seed=5)
    subset = coordinate_subset(run.joint, 4, seed=0)
    part = expected_curvature_subset(run.joint, mean, sd, draws=32, seed=5, coordinates=subset, chunk=5)
    np.testing.assert_allclose(part.hessian_diagonal, full.hessian_diagonal[:, subset], rtol=1e-10, atol=1e-12)
    assert part.blocks is None and part.draws == full.draws


def test_size_guard_skips_dense_methods_with_a_reason_and_never_builds_the_hessian(monkeypatch):
    from study.core.joint import FlatJoint
    from study.run.runner import run_model

    def dense_hessian(self, z):
        raise AssertionError("the dense Hessian was built above the size guard")

    monkeypatch.setattr(FlatJoint, "hessian", dense_hessian)
    for method in ("laplace_full", "laplace_diag", "laplace_torch_full", "svi_fullrank", "reference"):
        monkeypatch.setitem(size_guard.LIMITS, method, (3, size_guard.LIMITS[method][1]))
    monkeypatch.setattr(size_guard, "DENSE_HESSIAN_LIMIT", 3)
    result = run_model("logistic_breast_cancer", ["laplace_full", "laplace_diag", "laplace_torch_full",
                                                  "svi_fullrank", "reference", "hessian_diag", "ggn_diag"],
                       Settings.make(quick=True), progress=False)
    for method in ("laplace_full", "laplace_diag", "laplace_torch_full", "svi_fullrank", "reference"):
        fit = result.fits[method]
        assert fit.status == SKIPPED and fit.reason.startswith("skipped above 3 latent coordinates (this model has 31)")
        assert "\n" not in fit.reason
    # The diagonal references run on: the MAP search needs no Hessian above the guard.
    assert result.fits["hessian_diag"].status == OK and result.fits["ggn_diag"].status == OK
    assert np.isfinite(result.fits["hessian_diag"].sd).all()


def test_fixed_point_residual_on_a_subset_leaves_the_rest_unmeasured():
    from study.checks.fixed_point import diagnose, fixed_point_residual

    run, z = _tiny_run()
    mean, sd = z.numpy(), np.full(run.joint.dim, 0.2)
    subset = coordinate_subset(run.joint, 3, seed=0)
    part = expected_curvature_subset(run.joint, mean, sd, draws=32, seed=5, coordinates=subset)
    full = fixed_point_residual(expected_curvature(run.joint, mean, sd, draws=32, seed=5), 0.01)
    residual = fixed_point_residual(part, 0.01)
    r = np.asarray(residual["r"], dtype=float)
    assert residual["coordinates"] == subset.tolist()
    np.testing.assert_allclose(r[subset], np.asarray(full["r"])[subset], rtol=1e-10)
    assert np.isnan(np.delete(r, subset)).all()
    verdict = diagnose(residual, None, run.joint.param_names)
    assert np.isfinite(verdict["max_abs_r"]) and verdict["verdict"] in ("fixed point", "not converged", "model")
