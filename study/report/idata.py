"""Fits as ArviZ ``InferenceData``: draws of every latent site in unconstrained space."""

from __future__ import annotations

import warnings

from study.core.results import Fit, ModelResult


def to_inference_data(model: ModelResult, fit: Fit) -> "az.InferenceData":
    """One ``InferenceData`` per fit; variables are the model's sites in unconstrained space.

    A site transformed to unconstrained space is named after its transform,
    e.g. ``"tau (log)"``, so ``az.summary`` rows read ``tau (log)`` and ``w[3]``,
    exactly the ``parameter`` names of ``comparison.csv``.
    """
    import arviz as az  # here, not at import: a warm run whose files are unchanged never needs it

    chains, draws, _ = fit.draws.shape
    posterior = {
        name: fit.draws[..., offset : offset + _size(shape)].reshape((chains, draws) + tuple(shape))
        for name, offset, shape in model.layout
    }
    attrs = {
        "model": model.name,
        "method": fit.method,
        "space": "unconstrained (the guide's coordinates)",
    }
    idata = az.from_dict(posterior=posterior, attrs=attrs)
    # ArviZ stamps every group with the time it was built; without it the same fit gives the
    # same file, byte for byte (a rerun reproduces idata/*.nc, as it does results.json).
    for group in idata.groups():
        idata[group].attrs.pop("created_at", None)
    return idata


def _size(shape) -> int:
    size = 1
    for n in shape:
        size *= n
    return size


def summary(model: ModelResult, fit: Fit) -> "pd.DataFrame":
    """``az.summary`` of a fit: moments and 94% HDI; ESS and R-hat where there are several chains."""
    import arviz as az

    idata = to_inference_data(model, fit)
    kind = "all" if fit.draws.shape[0] > 1 else "stats"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.summary(idata, kind=kind, round_to="none")
