"""Plain data passed between the stages of the study.

A ``Fit`` is everything one method says about one model, in flat
unconstrained coordinates (see ``study.core.joint``). The tables, the ArviZ files
and the report are functions of fits, never of live Pyro objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from study.core.settings import Settings

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# A fit that ran and is kept, but whose numbers a diagnostic calls into doubt
# (e.g. NUTS divergences); ``reason`` says which. It counts as usable (``Fit.ok``).
FLAGGED = "flagged"


@dataclass
class Fit:
    """One method's approximation of one model's posterior.

    Attributes
    ----------
    model, method : str
        Names, as on the command line.
    param_names : list[str]
        Length ``d``; e.g. ``"w[3]"``, ``"sigma (log)"``.
    mean, sd : np.ndarray
        Shape ``(d,)``: marginal means and standard deviations.
    draws : np.ndarray or None
        Shape ``(chains, draws, d)``: draws from the approximation (or the
        reference), for ArviZ.
    info : dict
        JSON-able facts about the fit (wall seconds, steps, ELBO, ESS, ...).
    trajectory : dict or None
        Optimisation history: ``step`` ``(T,)``, ``loss`` ``(T,)``,
        ``log_sigma`` ``(T, d)``.
    status : str
        ``"ok"``, ``"flagged"``, ``"failed"`` or ``"skipped"``; ``reason`` says why
        when not ``"ok"``.
    """

    model: str
    method: str
    param_names: list[str]
    mean: np.ndarray | None = None
    sd: np.ndarray | None = None
    draws: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    trajectory: dict[str, np.ndarray] | None = None
    status: str = OK
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Usable numbers: ``"ok"``, or ``"flagged"`` (kept, with a warning)."""
        return self.status in (OK, FLAGGED)


@dataclass
class ModelResult:
    """All fits of one model, with what the report needs to describe it.

    ``layout`` lists each latent site as ``(variable name, flat offset,
    unconstrained shape)`` so flat draws can be turned back into sites.
    ``scale_children`` maps each latent scale site with hierarchical children to
    those children (``study.core.structure.hierarchical_scales``); None when not
    assessed.
    """

    name: str
    title: str
    description: str
    param_names: list[str]
    fits: dict[str, Fit]
    notes: list[str] = field(default_factory=list)
    status: str = OK
    reason: str = ""
    reference_kind: str = ""
    layout: list[tuple[str, int, tuple[int, ...]]] = field(default_factory=list)
    wall_seconds: float = 0.0
    scale_children: dict[str, list[str]] | None = None

    @property
    def reference(self) -> Fit | None:
        fit = self.fits.get("reference")
        return fit if fit is not None and fit.ok else None


@dataclass
class StudyResult:
    """Everything a study run produced; the outputs are functions of it."""

    models: list[ModelResult]
    settings: Settings
    methods: list[str]
    wall_seconds: float
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    # Figure-cache entries of the report sections the fit workers drew, and the ArviZ files they
    # wrote (``study.report.write.draw_model_section``).
    drawn: dict = field(default_factory=dict)
    drawn_idata: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No model or fit failed or was flagged."""
        return all(
            m.status != FAILED and all(f.status not in (FAILED, FLAGGED) for f in m.fits.values())
            for m in self.models
        )
