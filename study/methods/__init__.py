"""The table of methods: a new method is one new entry here.

Methods run in this order for each model. They share one MAP search (the
Laplace methods use it, the SVI guides start their means there, NUTS is
preconditioned by the Laplace covariance), computed once per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from study.core.context import ModelRun
from study.methods.laplace import fit_laplace_diag, fit_laplace_full
from study.methods.laplace_torch import applicability as laplace_torch_applicability
from study.methods.laplace_torch import fit_laplace_torch_diag, fit_laplace_torch_full
from study.methods.reference import applicability as reference_applicability
from study.methods.reference import fit_reference
from study.core.results import Fit
from study.methods.svi import fit_expected_loss, fit_svi_meanfield
from study.methods import ablation
from study.methods import guides
from study.methods import ivon
from study.methods import lrvb
from study.methods import sweep
from study.methods import curvature
from study.methods.size_guard import guarded


def _always(run: ModelRun) -> str | None:
    return None


@dataclass(frozen=True)
class Method:
    """One way of approximating a posterior.

    Attributes
    ----------
    name : str
        Identifier on the command line and in every table.
    summary : str
        One line for the report.
    fit : callable
        ``fit(run: ModelRun) -> Fit``.
    applies : callable
        ``applies(run) -> None`` or the reason the method does not apply.
    stores_skip : bool
        ``applies`` reads what an earlier fit of this run left (the linear response: the
        mean-field fit's curvature draws), which a fit read from the cache does not bring
        back. A skip it finds is then stored in the cache like a fit, so that a rerun reuses
        it instead of computing again what the cold run already knew. Other skips are
        decided from the model alone and cost nothing to decide again.
    """

    name: str
    summary: str
    fit: Callable[[ModelRun], Fit]
    applies: Callable[[ModelRun], str | None] = _always
    stores_skip: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("svi_meanfield", "mean-field Gaussian (AutoNormal's parameters), full ELBO, the seeds in one "
               "vectorised fit, iterate-averaged", fit_svi_meanfield),
        Method("svi_meanfield_lr", "linear-response covariance of the mean-field fit (Giordano, Broderick & Jordan 2018)", lrvb.fit_svi_meanfield_lr, guarded("svi_meanfield_lr", lrvb.applicability), stores_skip=True),
        Method("svi_lowrank", "AutoLowRankMultivariateNormal (rank round(sqrt(d))), full ELBO, iterate-averaged", guides.fit_svi_lowrank, guarded("svi_lowrank")),
        Method("svi_fullrank", "AutoMultivariateNormal (dense Cholesky factor), full ELBO, iterate-averaged", guides.fit_svi_fullrank, guarded("svi_fullrank")),
        Method("expected_loss", "same guide, expected negative log-likelihood only (no prior, no entropy)", fit_expected_loss),
        Method("kl_ablation", "2x2 ablation of the KL terms (prior, entropy) at a constant learning rate; sd: the full arm", ablation.fit_kl_ablation, ablation.applicability),
        Method("laplace_full", "exact Hessian at the MAP: sqrt((H^-1)_ii)", fit_laplace_full, guarded("laplace_full")),
        Method("laplace_diag", "exact Hessian at the MAP: 1/sqrt(H_ii)", fit_laplace_diag, guarded("laplace_diag")),
        Method("laplace_torch_full", "laplace-torch FullLaplace, all weights", fit_laplace_torch_full, guarded("laplace_torch_full", laplace_torch_applicability)),
        Method("laplace_torch_diag", "laplace-torch DiagLaplace, all weights", fit_laplace_torch_diag, laplace_torch_applicability),
        Method("hessian_diag", "exact Hessian diagonal of -log p at the mean-field mean (else the MAP), HVPs; 128 random coordinates per site above 20,000 weights: 1/sqrt(H_ii)", curvature.fit_hessian_diag),
        Method("ggn_diag", "laplace-torch diagonal GGN (BackPackGGN) at the same point: 1/sqrt(GGN_ii + prior)", curvature.fit_ggn_diag, curvature.applicability),
        Method("kfac", "laplace-torch Kronecker-factored GGN (CurvlinopsGGN) at the same point; marginal sds from the factors", curvature.fit_kfac, curvature.applicability),
        Method("laplace_last_layer", "laplace-torch last-layer full Laplace at the same point; other weights: no sd", curvature.fit_laplace_last_layer, curvature.last_layer_applicability),
        Method("ivon", "IVON optimiser (ivon-opt) on the model's network, else on its flat log joint: sigma = 1/sqrt(N (h + prior/N)), h its Hessian estimate", ivon.fit_ivon, ivon.applicability),
        Method("reference", "analytic posterior, posteriordb gold draws, or NUTS", fit_reference, guarded("reference", reference_applicability)),
        Method("data_sweep", "sigma_SVI, laplace_diag and laplace_full refitted on nested subsets of the data; sd: all the data", sweep.fit_data_sweep, guarded("data_sweep", sweep.applicability)),
    )
}
