"""What every method gets: one model, its data, its flat log joint and the run settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models import ModelSpec

from study.core.joint import FlatJoint, init_to_unconstrained_zero
from study.core.results import Fit
from study.core.settings import Settings


@dataclass
class ModelRun:
    """One model inside one study run.

    Attributes
    ----------
    spec : ModelSpec
    data : dict
        ``spec.data()``, computed once.
    joint : FlatJoint
        The log joint over the flat unconstrained latents.
    settings : Settings
    fits : dict[str, Fit]
        Fits finished so far, by method (later methods may reuse earlier ones).
    cache : dict
        Artefacts shared between methods (MAP, Hessian), computed once.
    progress : bool
        Show progress bars for long fits.
    """

    spec: ModelSpec
    data: dict[str, Any]
    joint: FlatJoint
    settings: Settings
    fits: dict[str, Fit] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    progress: bool = False

    @classmethod
    def create(
        cls, spec: ModelSpec, settings: Settings, data: dict | None = None, progress: bool = False
    ) -> "ModelRun":
        data = spec.data() if data is None else data
        joint = FlatJoint(spec.model, data, spec.init_loc_fn, memory_budget=settings.memory_budget)
        return cls(spec=spec, data=data, joint=joint, settings=settings, progress=progress)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def init_loc_fn(self):
        return self.spec.init_loc_fn or init_to_unconstrained_zero

    def seed(self, method: str) -> int:
        return self.settings.fit_seed(self.spec.name, method)

    def new_fit(self, method: str, **kwargs) -> Fit:
        return Fit(model=self.spec.name, method=method, param_names=list(self.joint.param_names), **kwargs)
