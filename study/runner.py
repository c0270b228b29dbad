"""Run the methods on the models: a failing fit never costs the others.

Models run one after another, or in worker processes (``workers > 1``); each
worker resolves its model from its source (a built-in name or a file path),
so user model files need not be importable by name.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from models import ModelSpec, builtin_models, load_model_file
from models._posteriordb import PosteriorDBUnavailable

from .context import ModelRun
from .methods import METHODS
from .reference import reference_kind
from .results import FAILED, OK, SKIPPED, ModelResult
from .settings import Settings
from .shape_check import check_shapes


class BadData(TypeError):
    """``data()`` did not return a dict of tensors."""


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``: how every failure is reported."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def resolve(source: str) -> ModelSpec:
    """A built-in model name or a path to a model file -> its ``ModelSpec``."""
    if source.endswith(".py") or os.sep in source:
        return load_model_file(source)
    return builtin_models()[source]


def check_data(spec: ModelSpec, data) -> None:
    if not isinstance(data, dict):
        raise BadData(f"{spec.name}: data() returned {type(data).__name__}, expected dict[str, torch.Tensor]")
    bad = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise BadData(
            f"{spec.name}: data() values must be torch.Tensor; not tensors: "
            + ", ".join(f"{k} ({type(data[k]).__name__})" for k in bad)
        )


def _prior_notes(run: ModelRun) -> list[str]:
    notes = []
    for site in run.joint.sites:
        if not site.is_normal_prior:
            notes.append(
                f"Latent `{site.name}` has a {site.prior_name} prior, not a Gaussian: the question is "
                f"about Gaussian priors; the Laplace target is still exact in unconstrained space "
                f"(`{site.variable_name}`)."
            )
    return notes


def run_model(source: str, methods: list[str], settings: Settings, progress: bool = True) -> ModelResult:
    """Every requested method on one model. Never raises for a failing fit or model."""
    torch.set_default_dtype(torch.float64)
    # One thread: the models are small, and the numbers must not depend on how many
    # threads a reduction was split over (same seed, same bytes, with or without workers).
    torch.set_num_threads(1)
    start = time.perf_counter()
    spec = resolve(source)
    result = ModelResult(name=spec.name, title=spec.title, description=spec.description, param_names=[], fits={})
    try:
        data = spec.data()
        check_data(spec, data)
        run = ModelRun.create(spec, settings, data, progress=progress)
        check_shapes(run.joint)  # before any fit: a mis-broadcast model stops here, naming the site
    except PosteriorDBUnavailable as error:
        result.status, result.reason = SKIPPED, str(error)
        return result
    except Exception as error:  # a broken model fails alone
        result.status, result.reason = FAILED, one_line(error)
        return result
    result.param_names = list(run.joint.param_names)
    result.layout = [(s.variable_name, s.offset, tuple(s.unconstrained_shape)) for s in run.joint.sites]
    result.notes.extend(_prior_notes(run))
    result.reference_kind = reference_kind(run)
    for name, method in METHODS.items():
        if name not in methods:
            continue
        reason = method.applies(run)
        if reason:
            run.fits[name] = run.new_fit(name, status=SKIPPED, reason=reason)
            continue
        try:
            fit = method.fit(run)
        except Exception as error:  # the report marks it failed, with the reason
            fit = run.new_fit(name, status=FAILED, reason=one_line(error))
            if progress:
                print(f"{spec.name}: {name} failed: {fit.reason}", file=sys.stderr)
        run.fits[name] = fit
    result.fits = dict(run.fits)
    result.wall_seconds = time.perf_counter() - start
    return result


def _worker(source: str, methods: list[str], settings: Settings, progress: bool) -> ModelResult:
    return run_model(source, methods, settings, progress)


def versions() -> dict[str, str]:
    import arviz
    import laplace
    import pyro
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro-ppl": pyro.__version__,
        "arviz": arviz.__version__,
        "laplace-torch": version("laplace-torch"),
        "numpy": version("numpy"),
    }


@dataclass
class StudyResult:
    """Everything a study run produced; the outputs are functions of it."""

    models: list[ModelResult]
    settings: Settings
    methods: list[str]
    wall_seconds: float
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""

    @property
    def ok(self) -> bool:
        return all(
            m.status != FAILED and all(f.status != FAILED for f in m.fits.values()) for m in self.models
        )


def run_study(
    sources: list[str],
    methods: list[str],
    settings: Settings,
    workers: int = 1,
    progress: bool = True,
    command: str = "",
) -> StudyResult:
    """Run ``methods`` on every model in ``sources`` (built-in names or file paths)."""
    start = time.perf_counter()
    methods = [m for m in METHODS if m in methods]
    if workers > 1 and len(sources) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(sources)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_worker, s, methods, settings, progress) for s in sources]
            models = [f.result() for f in futures]
    else:
        models = [run_model(s, methods, settings, progress) for s in sources]
    return StudyResult(
        models=models,
        settings=settings,
        methods=methods,
        wall_seconds=time.perf_counter() - start,
        versions=versions(),
        command=command,
    )
