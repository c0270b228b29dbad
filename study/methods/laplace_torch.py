"""laplace-torch's Laplace approximations of the same posterior, as an independent check.

``Laplace(module, likelihood, subset_of_weights="all", hessian_structure=...)``
is fitted at the MAP found by ``study.methods.laplace`` (loaded into the model's
``torch.nn.Module`` twin), with the prior precision and observation noise of the
Pyro model. For a GLM its generalised Gauss-Newton matrix is the exact Hessian,
so ``laplace_torch_full``/``_diag`` must equal ``laplace_full``/``_diag``; for a
network the GGN drops the second-derivative-of-the-network term and differs.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from study.core.context import ModelRun
from study.core.joint import transform_label
from study.methods.laplace import map_and_hessian
from study.core.results import Fit
from study.core.draws import diagonal_gaussian_draws, gaussian_draws


class NotApplicable(ValueError):
    """The method does not apply to this model; the message says why."""


def applicability(run: ModelRun) -> str | None:
    """``None`` when laplace-torch applies to the model, else the reason it does not."""
    if run.spec.laplace_torch is None:
        return "the model defines no laplace_torch module (not a GLM or network laplace-torch supports)"
    return None


def _flat_index(run: ModelRun, module: torch.nn.Module, mapping: dict[str, str]) -> np.ndarray:
    """For each element of ``parameters_to_vector(module.parameters())``, its flat latent index."""
    covered: set[str] = set()
    index = []
    for pname, param in module.named_parameters():
        if pname not in mapping:
            raise NotApplicable(f"module parameter {pname!r} has no latent site in site_of_parameter")
        site = run.joint.site(mapping[pname])
        if site.size != param.numel():
            raise NotApplicable(
                f"module parameter {pname!r} has {param.numel()} elements, site {site.name!r} has {site.size}"
            )
        if transform_label(site.transform):
            raise NotApplicable(f"site {site.name!r} is constrained; laplace-torch parameters are unconstrained")
        covered.add(site.name)
        index.append(np.arange(site.offset, site.offset + site.size))
    missing = [s.name for s in run.joint.sites if s.name not in covered]
    if missing:
        raise NotApplicable(f"latent sites {missing} are not parameters of the laplace-torch module")
    return np.concatenate(index)


def fitted_laplace(run: ModelRun, z: torch.Tensor, subset_of_weights: str, structure: str, backend=None,
                   decompose: bool = True):
    """laplace-torch ``Laplace`` fitted at the flat point ``z``: ``(problem, index, la)``.

    ``index`` maps each element of the module's parameter vector to its flat latent index.
    The module is built afresh on every call: BackPack's hooks stay on a module it has
    extended, and a later ``vmap`` through it fails.

    ``backend=None`` with ``structure="diag"`` takes ``BackPackGGN`` where BackPack knows
    every layer: its diagonal GGN is exact and fast (0.03 s on the 1,210-weight digits
    network, where laplace-torch's default ``CurvlinopsGGN`` took 30 s for the same
    diagonal). Other modules (e.g. ``models._glm.BinaryLogits``) keep the default backend,
    slower but exact for any module. Other structures take the default unless ``backend``
    names one.

    ``decompose=False`` (``structure="kron"`` only) leaves ``la.H`` the undecomposed
    Kronecker factors: ``KronLaplace.fit`` eigendecomposes every factor for its own
    posterior (166 s for the 8,000 x 8,000 factors of the 96,001-weight diabetes network),
    which a caller that decomposes the factors itself does not need.
    """
    if not decompose and structure != "kron":
        raise ValueError(f"decompose=False applies to the kron structure, not {structure!r}")
    if backend is None and structure == "diag":
        from laplace.curvature import BackPackGGN

        try:
            return _fitted_laplace(run, z, subset_of_weights, structure, BackPackGGN)
        except NotImplementedError:
            pass
    return _fitted_laplace(run, z, subset_of_weights, structure, backend, decompose)


def _fitted_laplace(run: ModelRun, z: torch.Tensor, subset_of_weights: str, structure: str, backend,
                    decompose: bool = True):
    """``fitted_laplace`` with ``backend`` as given (``None``: laplace-torch's default)."""
    from laplace import Laplace

    problem = run.spec.laplace_torch(run.data)
    module = problem.module.to(run.joint.dtype)
    index = _flat_index(run, module, problem.site_of_parameter)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.as_tensor(z)[torch.as_tensor(index)], module.parameters())
    inputs = problem.inputs.to(run.joint.dtype)
    targets = problem.targets if problem.likelihood == "classification" else problem.targets.to(run.joint.dtype)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=len(inputs))
    kwargs = {"prior_precision": float(problem.prior_precision)}
    if problem.likelihood == "regression":
        kwargs["sigma_noise"] = float(problem.sigma_noise)
    if backend is not None:
        kwargs["backend"] = backend
    la = Laplace(module, problem.likelihood, subset_of_weights=subset_of_weights, hessian_structure=structure, **kwargs)
    with warnings.catch_warnings():
        # BackPack's full backward hooks fire on outputs of inputs that need no gradient
        # (the data): harmless, and torch warns once per process.
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        if decompose:
            la.fit(loader)
        else:
            from laplace.baselaplace import KronLaplace

            # KronLaplace.fit is ParametricLaplace.fit (the factors, summed over the data into
            # la.H) followed by their eigendecomposition; run the first part only.
            super(KronLaplace, la).fit(loader)
            la.H_facs = la.H
    return problem, index, la


def _fit(run: ModelRun, structure: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Mean, marginal sd and (``full`` only) covariance in flat latent order, plus facts."""
    start = time.perf_counter()
    z_map = map_and_hessian(run)["z"]

    # diag: BackPackGGN where BackPack knows the layers, the default backend otherwise.
    problem, index, la = fitted_laplace(run, z_map, "all", structure)
    covariance = None
    if structure == "full":
        module_covariance = la.posterior_covariance.detach().numpy()
        variance = torch.as_tensor(np.diag(module_covariance).copy())
        covariance = np.empty((run.joint.dim, run.joint.dim))
        covariance[np.ix_(index, index)] = module_covariance
    else:
        variance = la.posterior_variance
    mean_module = la.mean.detach().numpy()
    sd_module = variance.detach().sqrt().numpy()
    mean = np.empty(run.joint.dim)
    sd = np.empty(run.joint.dim)
    mean[index] = mean_module
    sd[index] = sd_module
    info = {
        "wall_seconds": time.perf_counter() - start,
        "backend": type(la.backend).__name__,
        "laplace_class": type(la).__name__,
        "prior_precision": float(problem.prior_precision),
        "sigma_noise": float(problem.sigma_noise) if problem.likelihood == "regression" else None,
        "likelihood": problem.likelihood,
    }
    return mean, sd, covariance, info


def fit_laplace_torch_full(run: ModelRun) -> Fit:
    """laplace-torch ``FullLaplace`` (``hessian_structure="full"``, all weights); marginal sds."""
    mean, sd, covariance, info = _fit(run, "full")
    draws = gaussian_draws(mean, covariance, run.settings.draws, run.seed("laplace_torch_full/draws"))
    return run.new_fit("laplace_torch_full", mean=mean, sd=sd, draws=draws, info=info)


def fit_laplace_torch_diag(run: ModelRun) -> Fit:
    """laplace-torch ``DiagLaplace`` (``hessian_structure="diag"``, all weights)."""
    mean, sd, _, info = _fit(run, "diag")
    return run.new_fit(
        "laplace_torch_diag", mean=mean, sd=sd,
        draws=diagonal_gaussian_draws(mean, sd, run.settings.draws, run.seed("laplace_torch_diag/draws")), info=info,
    )
