"""Linear regressions shared by several posteriordb posteriors.

posteriordb holds many posteriors that are one Stan linear regression on different data
(``earnings``, ``kidiq``, ``kidiq_with_mom_work``, ``mesquite``, the eight ``nesYYYY``
surveys, the ``sblr*`` designs). Each posterior's file names its data and calls the code here, so
the model is written once.

Every model here is, with the intercept as the first column of ``X``::

    y_n ~ normal(X_n . beta, sigma)        n = 1..N

and differs only in the priors, which follow the Stan files:

- :func:`flat_regression`: ``beta`` and ``sigma`` carry no prior statement, so their
  priors are Stan's implicit improper flat ones (on R^K and on (0, inf));
- :func:`half_cauchy_sigma_regression`: ``sigma ~ cauchy(0, 2.5)`` on ``sigma > 0``
  (a half-Cauchy), ``beta`` flat;
- :func:`blr`: ``beta ~ normal(0, 10)``, ``sigma ~ normal(0, 10)`` on ``sigma > 0``
  (a half-normal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ._contract import ModelSpec
from ._linear import NormalLinear
from ._posteriordb import load_data, load_reference_draws, stack_indexed
from ._stan import flat

__all__ = [
    "blr",
    "blr_data",
    "blr_spec",
    "columns_data",
    "flat_regression",
    "half_cauchy_sigma_regression",
    "load_data",
    "nes_data",
    "nes_spec",
    "regression_data",
    "regression_draws",
    "regression_spec",
    "standardise",
    "tensors",
]


def _likelihood(X: torch.Tensor, y: torch.Tensor, beta: torch.Tensor, sigma: torch.Tensor) -> None:
    # prod_n normal(y_n | X_n . beta, sigma) as one event over the N rows, from the design's
    # sufficient statistics (``NormalLinear``: O(K^2) per particle instead of O(N K)).
    pyro.sample("y", NormalLinear(X, beta, sigma), obs=y)


def _flat_beta(X: torch.Tensor) -> torch.Tensor:
    return pyro.sample("beta", flat(constraints.real, X.shape[-1:]))


def flat_regression(X: torch.Tensor, y: torch.Tensor) -> None:
    """``y ~ normal(X beta, sigma)``, ``beta`` and ``sigma`` flat (improper, as in Stan).

    Parameters
    ----------
    X : torch.Tensor
        Design, shape ``(N, K)``, the intercept column included.
    y : torch.Tensor
        Observations, shape ``(N,)``.
    """
    beta = _flat_beta(X)
    sigma = pyro.sample("sigma", flat(constraints.positive))
    _likelihood(X, y, beta, sigma)


def half_cauchy_sigma_regression(X: torch.Tensor, y: torch.Tensor) -> None:
    """As :func:`flat_regression`, but ``sigma ~ half-Cauchy(0, 2.5)`` (Stan: ``cauchy(0, 2.5)`` on ``sigma > 0``)."""
    beta = _flat_beta(X)
    sigma = pyro.sample("sigma", dist.HalfCauchy(torch.tensor(2.5, dtype=X.dtype)))
    _likelihood(X, y, beta, sigma)


def blr(X: torch.Tensor, y: torch.Tensor) -> None:
    """posteriordb's ``blr``: ``beta ~ normal(0, 10)^K``, ``sigma ~ half-normal(0, 10)``.

    The arguments are those of :func:`flat_regression`; the ``sblr*`` designs have no
    intercept column.
    """
    zero = torch.zeros(X.shape[-1], dtype=X.dtype)
    beta = pyro.sample("beta", dist.Normal(zero, 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(10.0, dtype=X.dtype)))
    _likelihood(X, y, beta, sigma)


def regression_data(y: torch.Tensor, predictors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The data of a regression with an intercept: ``X = [1, predictors...]``.

    Parameters
    ----------
    y : torch.Tensor
        Observations, shape ``(N,)``.
    predictors : sequence of torch.Tensor
        The columns after the intercept, each of shape ``(N,)``, in the order of Stan's
        ``beta[2]``, ``beta[3]``, ...

    Returns
    -------
    dict
        ``{"X": (N, 1 + len(predictors)), "y": (N,)}`` in float64.
    """
    y = torch.as_tensor(y, dtype=torch.float64)
    columns = [torch.ones_like(y)] + [torch.as_tensor(p, dtype=torch.float64) for p in predictors]
    if any(c.shape != y.shape for c in columns):
        raise ValueError(f"every predictor must have the {tuple(y.shape)} shape of the observations")
    return {"X": torch.stack(columns, dim=-1), "y": y}


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Gelman & Hill's ``(x - mean(x)) / (2 sd(x))``, with Stan's ``sd`` (divisor N - 1)."""
    return (x - x.mean()) / (2 * x.std(correction=1))


def tensors(raw: dict) -> dict[str, torch.Tensor]:
    """posteriordb's data record with every list as a float64 tensor (scalars dropped)."""
    return {key: torch.tensor(value, dtype=torch.float64) for key, value in raw.items() if isinstance(value, list)}


def columns_data(posterior: str, response: str, predictors: Sequence[str]) -> dict[str, torch.Tensor]:
    """:func:`regression_data` on the posterior's data columns as they are stored (no transform)."""
    x = tensors(load_data(posterior))
    return regression_data(x[response], [x[name] for name in predictors])


def regression_draws(posterior: str, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """posteriordb's gold draws of ``beta`` (``(S, K)``) and ``sigma`` (``(S,)``)."""
    draws = load_reference_draws(posterior)
    return {
        "beta": torch.tensor(stack_indexed(draws, "beta", data["X"].shape[-1])),
        "sigma": torch.tensor(draws["sigma"]),
    }


def regression_spec(posterior: str, pretty_name: str, model, data) -> ModelSpec:
    """A posteriordb regression's ``ModelSpec``: gold draws of ``beta`` and ``sigma`` as reference.

    Parameters
    ----------
    posterior : str
        posteriordb posterior name, e.g. ``"kidiq-kidscore_momhs"``.
    pretty_name : str
        Title for tables.
    model : callable
        One of :func:`flat_regression`, :func:`half_cauchy_sigma_regression`, :func:`blr`.
    data : callable
        ``data() -> {"X": (N, K), "y": (N,)}``.
    """
    return ModelSpec(
        name=posterior,
        pretty_name=pretty_name,
        model=model,
        data=data,
        reference_draws=partial(regression_draws, posterior),
        posteriordb=posterior,
    )


def nes_data(posterior: str) -> dict[str, torch.Tensor]:
    """A National Election Study survey as posteriordb's ``nes`` model reads it.

    Party identification (7-point scale) on ideology, race, age (a 4-level factor as three
    dummies: 30-44, 45-64, 65+), education, gender and income (Gelman & Hill 2007, sec. 4.7).

    Returns
    -------
    dict
        ``{"X": (N, 9), "y": (N,)}``, the columns in the order of Stan's ``beta``.
    """
    x = tensors(load_data(posterior))
    age = [(x["age_discrete"] == level).double() for level in (2, 3, 4)]
    columns = [x["real_ideo"], x["race_adj"], *age, x["educ1"], x["gender"], x["income"]]
    return regression_data(x["partyid7"], columns)


_NES_DESCRIPTION = """posteriordb ``{posterior}``: party identification in the {year} National Election Study.

```
age30_44, age45_64, age65up = 1[age_discrete = 2], 1[= 3], 1[= 4]   (dummies of a 4-level factor)
partyid7_n ~ normal(beta_1 + beta_2 real_ideo + beta_3 race_adj + beta_4 age30_44
                    + beta_5 age45_64 + beta_6 age65up + beta_7 educ1 + beta_8 gender
                    + beta_9 income, sigma)            n = 1..N respondents in {year}
beta  : flat on R^9                    (improper, as in Stan: no prior statement)
sigma : flat on (0, inf)               (improper, as in Stan: no prior statement)
```

One Stan model, ``nes``, fitted to each of eight survey years (Gelman & Hill 2007, sec. 4.7).
"""


def nes_spec(posterior: str, year: int) -> ModelSpec:
    """The ``ModelSpec`` of posteriordb's ``nes<year>-nes``: :func:`flat_regression` on :func:`nes_data`.

    Its description (the model in pseudo-code) is shared by the eight survey years.
    """
    spec = regression_spec(
        posterior, f"posteriordb NES {year}: party identification", flat_regression, partial(nes_data, posterior)
    )
    return replace(spec, description=_NES_DESCRIPTION.format(posterior=posterior, year=year))


def blr_data(posterior: str) -> dict[str, torch.Tensor]:
    """The design ``X`` (``(N, D)``, no intercept) and ``y`` (``(N,)``) of an ``sblr*`` data set."""
    x = tensors(load_data(posterior))
    return {"X": x["X"], "y": x["y"]}


def blr_spec(posterior: str, pretty_name: str) -> ModelSpec:
    """The ``ModelSpec`` of a posteriordb ``<data>-blr`` posterior: :func:`blr` on :func:`blr_data`."""
    spec = regression_spec(posterior, pretty_name, blr, partial(blr_data, posterior))
    # Coefficients' sd ~1e-3 next to sigma's 0.07: sigma needs the longer SVI run.
    return replace(spec, svi_steps_scale=2.0)
