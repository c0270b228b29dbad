"""Run the methods on the models: a failing fit never costs the others.

Models run one after another, or in worker processes (``workers > 1``); each
worker resolves its model from its source (a built-in name or a file path),
so user model files need not be importable by name.

A fit that raises is marked ``failed`` with a one-line reason and the next
method runs; a model whose data or log joint cannot be built is ``failed`` as a
whole and the next model runs. A fit that finishes but fails a diagnostic
(NUTS divergences above ``MAX_DIVERGENT_FRACTION``) keeps its numbers and is
marked ``flagged``. With a cache folder, every finished fit is stored as soon
as it finishes and reused by a rerun (``study.run.cache``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import pyro
import torch

from models import ModelSpec, builtin_models, load_model_file
from models._posteriordb import PosteriorDBUnavailable

from study.run.cache import FitCache, model_fingerprint
from study.core.context import ModelRun
from study.methods import METHODS
from study.methods.reference import NUTS_KIND, reference_kind
from study.core.errors import one_line
from study.core.results import FAILED, FLAGGED, OK, SKIPPED, Fit, ModelResult, StudyResult
from study.core.settings import Settings
from study.checks.shape import check_shapes
from study.core.memory import fix_mmap_threshold

# A NUTS run with more divergent transitions than this fraction of its draws is
# flagged: divergences mean the sampler missed regions of high curvature, so its
# sd may be biased (Betancourt 2017, "A Conceptual Introduction to HMC", sec. 6.2).
MAX_DIVERGENT_FRACTION = 0.01


class BadData(TypeError):
    """``data()`` did not return a dict of tensors."""


def resolve(source: str | ModelSpec) -> ModelSpec:
    """A built-in model name, a path to a model file, or a ``ModelSpec`` -> its ``ModelSpec``."""
    if isinstance(source, ModelSpec):
        return source
    if source.endswith(".py") or os.sep in source:
        return load_model_file(source)
    return builtin_models()[source]


def check_data(spec: ModelSpec, data) -> None:
    """Raise ``BadData`` unless ``data`` is a ``dict[str, torch.Tensor]``."""
    if not isinstance(data, dict):
        raise BadData(f"{spec.name}: data() returned {type(data).__name__}, expected dict[str, torch.Tensor]")
    keys = [k for k in data if not isinstance(k, str)]
    if keys:
        raise BadData(f"{spec.name}: data() keys must be str (the model's argument names); got {keys[0]!r}")
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


def flags(fit: Fit) -> list[str]:
    """Why a finished fit's numbers are in doubt (empty when they are not)."""
    out = []
    info = fit.info or {}
    if info.get("kind") == NUTS_KIND and "divergences" in info:
        total = int(info.get("chains", 1)) * int(info.get("draws_per_chain", 0))
        divergent = int(info["divergences"])
        if total and divergent > MAX_DIVERGENT_FRACTION * total:
            out.append(
                f"{divergent} of {total} NUTS draws diverged ({100.0 * divergent / total:.1f}%, above "
                f"{100.0 * MAX_DIVERGENT_FRACTION:g}%): the sampler missed part of the posterior; its sd may be biased"
            )
    return out


def _flagged(fit: Fit) -> Fit:
    reasons = flags(fit) if fit.status == OK else []
    if reasons:
        fit.status, fit.reason = FLAGGED, "; ".join(reasons)
    return fit


def _source_name(source) -> str:
    return source.name if isinstance(source, ModelSpec) else Path(str(source)).stem


def run_model(
    source: str | ModelSpec,
    methods: list[str],
    settings: Settings,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> ModelResult:
    """Every requested method on one model. Never raises for a failing fit or model.

    Parameters
    ----------
    source : str or ModelSpec
        A built-in model's name, a model file's path, or a spec (in-process only).
    cache_dir : Path, optional
        Fit cache folder (``<out>/cache``): finished fits are stored there and
        reused when their key matches; None computes every fit.
    """
    torch.set_default_dtype(torch.float64)
    # One thread: the models are small, and the numbers must not depend on how many
    # threads a reduction was split over (same seed, same bytes, with or without workers).
    torch.set_num_threads(1)
    fix_mmap_threshold()  # loops of Hessian-vector products must not fragment the heap
    start = time.perf_counter()
    try:
        spec = resolve(source)
    except Exception as error:  # e.g. a model file changed after the input checks
        return ModelResult(name=_source_name(source), title=_source_name(source), description="",
                           param_names=[], fits={}, status=FAILED, reason=one_line(error))
    result = ModelResult(name=spec.name, title=spec.title, description=spec.description, param_names=[], fits={})
    # Global RNGs seeded per model and per method: an unseeded draw (an init_to_sample
    # start, random data) must not depend on what ran before in this process, nor on
    # which fits came from the cache.
    pyro.set_rng_seed(settings.fit_seed(spec.name, "model"))
    try:
        data = spec.data()
        check_data(spec, data)
        run = ModelRun.create(spec, settings, data, progress=progress)
        check_shapes(run.joint)  # before any fit: a mis-broadcast model stops here, naming the site
        cache = None
        if cache_dir is not None:
            source_path = "" if isinstance(source, ModelSpec) else str(source)
            cache = FitCache(cache_dir, model_fingerprint(spec, source_path, data, versions()), settings)
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
        fit = cache.load(name) if cache is not None else None
        if fit is None:
            pyro.set_rng_seed(run.seed(name))
            try:
                fit = method.fit(run)
            except Exception as error:  # the report marks it failed, with the reason
                fit = run.new_fit(name, status=FAILED, reason=one_line(error))
                if progress:
                    print(f"{spec.name}: {name} failed: {fit.reason}", file=sys.stderr)
            else:
                if cache is not None:
                    try:
                        cache.store(name, fit)
                        fit.info["cache"] = "stored"
                    except OSError as error:  # e.g. a full disk: the fit itself is fine
                        print(f"{spec.name}: {name} not cached: {one_line(error)}", file=sys.stderr)
        else:
            fit.info["cache"] = "reused"
        run.fits[name] = _flagged(fit)
    result.fits = dict(run.fits)
    result.wall_seconds = time.perf_counter() - start
    return result


def _worker(source: str, methods: list[str], settings: Settings, progress: bool,
            cache_dir: Path | None = None) -> ModelResult:
    return run_model(source, methods, settings, progress, cache_dir)


def _collect(future, source: str) -> ModelResult:
    """A worker's result; a worker that died (e.g. killed for memory) fails its model alone."""
    try:
        return future.result()
    except Exception as error:
        name = _source_name(source)
        return ModelResult(name=name, title=name, description="", param_names=[], fits={},
                           status=FAILED, reason=f"worker process failed: {one_line(error)}")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages behind the numbers."""
    return dict(_versions())


@lru_cache(maxsize=None)
def _versions() -> tuple[tuple[str, str], ...]:
    import arviz
    import laplace
    import pyro
    from importlib.metadata import version

    return (
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("pyro-ppl", pyro.__version__),
        ("arviz", arviz.__version__),
        ("laplace-torch", version("laplace-torch")),
        ("numpy", version("numpy")),
    )


def run_study(
    sources: list[str],
    methods: list[str],
    settings: Settings,
    workers: int = 1,
    progress: bool = True,
    command: str = "",
    cache_dir: Path | None = None,
) -> StudyResult:
    """Run ``methods`` on every model in ``sources`` (built-in names or file paths).

    ``cache_dir``: the fit cache folder (see ``run_model``), or None.
    """
    start = time.perf_counter()
    methods = [m for m in METHODS if m in methods]
    if workers > 1 and len(sources) > 1:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(sources)), mp_context=get_context("spawn"))
        try:
            futures = [pool.submit(_worker, s, methods, settings, progress, cache_dir) for s in sources]
            models = [_collect(future, source) for future, source in zip(futures, sources)]
        except BaseException:
            # Ctrl-C or a kill: stop the workers now rather than after their models.
            # Finished fits are already in the cache; a worker stopped mid-write leaves
            # only a temporary file, which the next run removes.
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    else:
        models = [run_model(s, methods, settings, progress, cache_dir) for s in sources]
    return StudyResult(
        models=models,
        settings=settings,
        methods=methods,
        wall_seconds=time.perf_counter() - start,
        versions=versions(),
        command=command,
    )
