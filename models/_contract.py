"""The contract every model of the study meets (see ``models/model_contract.md``).

A model file defines one module-level ``SPEC = ModelSpec(...)``. Everything the
pipeline needs to know about a model is in that object; nothing else in the
project has to change when a model is added.

Latent coordinates
------------------
Every comparison happens in the *unconstrained* space where Pyro's guides live:
each latent site ``x`` with support ``S`` is mapped by ``biject_to(S).inv`` to
``z``, and the flat vector ``z`` (length ``d``) concatenates the sites in the
order the model samples them, each flattened in C order. Fields below that
speak of "flat coordinates" mean this vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

Data = Mapping[str, Any]


@dataclass(frozen=True)
class GaussianPosterior:
    """An exact Gaussian posterior over the flat unconstrained latents.

    Attributes
    ----------
    mean : torch.Tensor
        Shape ``(d,)``.
    covariance : torch.Tensor
        Shape ``(d, d)``.
    """

    mean: torch.Tensor
    covariance: torch.Tensor


@dataclass(frozen=True)
class LaplaceTorchProblem:
    """A model as laplace-torch sees it: a plain ``torch.nn.Module`` and its likelihood.

    The module's parameters must be the model's latent sites (same shapes), the
    likelihood and the isotropic Gaussian prior must match the Pyro model, so
    that laplace-torch approximates the very posterior the Pyro model defines.

    Attributes
    ----------
    module : torch.nn.Module
        A fresh module; the pipeline loads the MAP into it before fitting.
    likelihood : str
        ``"regression"`` (Gaussian noise ``sigma_noise``) or ``"classification"``
        (softmax cross-entropy over the module's outputs; a binary logistic model
        outputs the logits ``[0, z]``).
    inputs : torch.Tensor
        Shape ``(N, ...)``, the module's inputs.
    targets : torch.Tensor
        Shape ``(N, outputs)`` for regression, ``(N,)`` class indices for classification.
    site_of_parameter : dict[str, str]
        Module parameter name (as in ``named_parameters()``) -> latent site name.
    prior_precision : float
        Precision of the zero-mean isotropic Gaussian prior on every parameter.
    sigma_noise : float
        Observation noise sd (regression only).
    """

    module: torch.nn.Module
    likelihood: str
    inputs: torch.Tensor
    targets: torch.Tensor
    site_of_parameter: dict[str, str]
    prior_precision: float
    sigma_noise: float = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """What the study needs to know about one model.

    Mandatory
    ---------
    name : str
        Identifier used on the command line and in every output file.
    model : callable
        A Pyro model called as ``model(**data())``. Its latent sites must be
        continuous, its data dimensions must sit in ``pyro.plate``\\ s, and it
        must broadcast over extra leading batch dimensions (vectorised particles).
    data : callable
        ``data() -> dict[str, torch.Tensor]``, observations included.

    Recommended
    -----------
    pretty_name : str
        A name fit for a table in a paper.
    description : str
        Markdown for the report: the model in pseudo-code. Defaults to the
        module docstring of the model file.
    exact_posterior : callable, optional
        ``exact_posterior(data) -> GaussianPosterior`` in flat unconstrained
        coordinates, for conjugate models: the best possible reference.
    reference_draws : callable, optional
        ``reference_draws(data) -> dict[str, Tensor]``: trusted posterior draws
        of each latent site on its constrained scale, shape ``(S, *site_shape)``
        (e.g. posteriordb's gold draws). Used as reference when there is no
        exact posterior; otherwise NUTS is run.
    posteriordb : str
        The posteriordb posterior the model translates (e.g. ``"arK-arK"``). When
        the project ships a summary of its gold draws
        (``models/posteriordb/reference_summaries/``), that summary is the
        reference, whether or not a posteriordb clone is configured;
        ``reference_draws`` then serves the checks and the summary's regeneration.
    reference_summary : str
        The shipped summary to read instead of the posteriordb posterior's own, for a
        reparameterisation of that posterior (e.g. ``kidiq-kidscore_interaction_bambi``):
        its ``reference_draws`` map the gold draws exactly into its coordinates, and
        ``models/posteriordb/regenerate.py`` summarises them under this name. Default:
        ``posteriordb``.

    Nice to have
    ------------
    laplace_torch : callable, optional
        ``laplace_torch(data) -> LaplaceTorchProblem`` for GLMs and networks
        laplace-torch supports.
    init_loc_fn : callable, optional
        A Pyro ``init_loc_fn`` used by the guides and as the MAP start
        (default ``init_to_feasible``). Networks want ``init_to_sample``.
    needs_posteriordb : bool
        True when ``data()`` needs a posteriordb clone (a posterior the project does
        not ship); the model is skipped with a note where none is configured.
    map_starts : int
        Independent L-BFGS searches for the MAP (default 1): the model's init point,
        then seeded points ``init + N(0, I)`` in unconstrained coordinates; the best
        end point wins. For posteriors with local modes (an ODE whose period can lock
        onto the wrong cycle).
    svi_steps_scale : float
        Multiplies the default number of SVI steps (slow-mixing models).
    svi_particles : int or None
        At most this many particles per SVI step (fewer than the settings' where a step's
        cost grows with them: a network's forward pass over every row). The fits report
        the particles they used and the Monte Carlo standard error that results.
    large_fit_dtype : str
        ``"float64"`` (default) or ``"float32"``: the precision of the mean-field SVI
        and IVON fits when the model is in the large-model regime (more latents than
        ``study.methods.svi.LARGE_MODEL_DIM``). Their results, and every other method,
        stay in float64. The networks take float32: their step is the hidden layer's
        matrix products, and a float32 step (subnormals flushed, ``study.methods.svi.precision``)
        of the 112,510-weight digits MLP took 20 ms against float64's 45-49 ms.
    nuts_max_tree_depth : int
        Caps NUTS trajectories (2**depth leapfrog steps) where NUTS is the
        reference; lower it only for posteriors NUTS cannot mix in anyway
        (multimodal networks), and read the ESS and R-hat it reports.
    no_reference : str
        Why no method can give this model a trusted reference (e.g. NUTS cannot mix
        across a network's permutation modes). When set, the ``reference`` method is
        skipped with this reason, in the report and ``comparison.csv``, instead of
        spending minutes on a reference the study would leave out anyway.
    """

    name: str
    model: Callable[..., Any]
    data: Callable[[], dict[str, torch.Tensor]]
    pretty_name: str = ""
    description: str = ""
    exact_posterior: Callable[[Data], GaussianPosterior] | None = None
    reference_draws: Callable[[Data], dict[str, torch.Tensor]] | None = None
    posteriordb: str = ""
    reference_summary: str = ""
    laplace_torch: Callable[[Data], LaplaceTorchProblem] | None = None
    init_loc_fn: Callable[..., Any] | None = None
    needs_posteriordb: bool = False
    map_starts: int = 1
    svi_steps_scale: float = 1.0
    svi_particles: int | None = None
    large_fit_dtype: str = "float64"
    nuts_max_tree_depth: int = 10
    no_reference: str = ""
    tags: tuple[str, ...] = field(default=())

    @property
    def title(self) -> str:
        return self.pretty_name or self.name
