"""Run the study on a ``dask.distributed`` cluster: one task per (model, group of methods).

``python -m study.compare --scheduler ADDRESS`` sends every fit to the cluster whose
scheduler listens at ``ADDRESS`` (``tcp://host:8786``); ``--scheduler local`` starts a
``LocalCluster`` on this machine with ``--workers`` single-threaded worker processes.
Dask is an optional dependency (``pip install .[dask]``); without ``--scheduler`` the
study never imports it.

Tasks. A method that reuses another's fit (``FIT_DEPENDENCIES``: the linear-response
covariance and the data sweep reuse the mean-field fit, the curvature references are taken
at its mean, the KL ablation reuses the expected-loss run) travels in one task with it, in
the order of ``study.methods.METHODS``; every other method is a task of its own. A task is
``study.run.runner.run_model`` on one model and those methods, so each fit is computed by
the same code, from the same seeds
(``Settings.fit_seed``: per model and method, never from what ran before in the
process), as in the serial run: the outputs are the same bytes.

Cache. The client, not the workers, reads and writes the fit cache (``<out>/cache``):
before submitting, every (model, method) already cached is reused; a group whose fits
are all cached is not submitted at all; a finished task's fits are stored as soon as it
arrives. Workers need the study's code and the models (``pip install .``), the same
``--model`` files at the same paths, and nothing else; the posteriordb path is passed
with each task.

Faults. A task whose worker dies (killed, out of memory) is rescheduled by Dask on
another worker, up to ``distributed.scheduler.allowed-failures`` times (default 3);
after that, or for any other error outside the fits, its fits are marked ``failed``
with the reason and the rest of the study goes on: the run finishes and exits with 1.
A fit that raises inside a task fails alone, as in the serial run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from models import ModelSpec
from models._posteriordb import ENV_VAR

from study.core.errors import one_line
from study.core.results import FAILED, OK, SKIPPED, Fit, ModelResult, StudyResult
from study.core.settings import Settings
from study.methods import METHODS
from study.run.runner import mark_flagged, method_groups, resolve, run_model, versions

LOCAL = "local"

# Pyro's parameter store and torch's default dtype are global to a process: a worker
# started with several threads still fits one task at a time.
_ONE_FIT_AT_A_TIME = threading.Lock()


class SchedulerError(RuntimeError):
    """No cluster to run on: dask.distributed is missing or the scheduler cannot be reached."""


def fit_group(source: str, methods: list[str], settings: Settings, progress: bool,
              posteriordb: str | None) -> ModelResult:
    """The task a worker runs: ``run_model`` on one model and a group of methods, no cache."""
    with _ONE_FIT_AT_A_TIME:
        if posteriordb:
            os.environ[ENV_VAR] = posteriordb
        return run_model(source, methods, settings, progress, cache_dir=None)


def _model_cache(source: str, settings: Settings, cache_dir: Path | None):
    """The client's ``(FitCache, ModelRun)`` for one model, or None (no cache, or it cannot load here)."""
    if cache_dir is None:
        return None
    import pyro
    import torch

    from study.core.context import ModelRun
    from study.run.cache import FitCache, model_fingerprint

    torch.set_default_dtype(torch.float64)
    try:
        spec = resolve(source)
        pyro.set_rng_seed(settings.fit_seed(spec.name, "model"))  # as run_model does before data()
        data = spec.data()
        run = ModelRun.create(spec, settings, data)
        source_path = "" if isinstance(source, ModelSpec) else str(source)
        return FitCache(cache_dir, model_fingerprint(spec, source_path, data, versions()), settings), run
    except Exception:  # the model is broken or skipped: its task says so
        return None


def _failed_fits(model: ModelResult, methods: list[str], reason: str) -> dict[str, Fit]:
    """The fits of a task whose worker failed: each marked failed with the reason."""
    return {m: Fit(model=model.name, method=m, param_names=list(model.param_names), status=FAILED, reason=reason)
            for m in methods}


def describe(source: str, settings: Settings) -> ModelResult:
    """A model's result without fits: its description, parameters and layout, or why it
    failed or was skipped (``run_model`` with no methods: data, log joint and shape check)."""
    return run_model(source, [], settings, progress=False, cache_dir=None)


def _client(scheduler: str, workers: int):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SchedulerError(
            "--scheduler needs dask.distributed: pip install 'sigma-study[dask]' (or pip install 'dask[distributed]')"
        ) from None
    if scheduler == LOCAL:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="30s"), None
    except (OSError, ValueError, TypeError) as error:  # unreachable, or not an address
        raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler}: {one_line(error)}") from None


def run_study_dask(
    sources: list[str],
    methods: list[str],
    settings: Settings,
    scheduler: str,
    workers: int = 2,
    progress: bool = True,
    command: str = "",
    cache_dir: Path | None = None,
    on_model=None,
) -> StudyResult:
    """``run_study`` on a Dask cluster: same arguments, same ``StudyResult``, same bytes.

    Parameters
    ----------
    scheduler : str
        A scheduler address (``tcp://host:8786``), or ``"local"`` for a ``LocalCluster``
        of ``workers`` single-threaded processes.
    cache_dir : Path, optional
        The fit cache, read and written here (on the client) as fits arrive.

    Raises
    ------
    SchedulerError
        dask.distributed is not installed, or the scheduler cannot be reached (before any fit).
    """
    from distributed import as_completed

    start = time.perf_counter()
    methods = [m for m in METHODS if m in methods]
    groups = method_groups(methods)
    posteriordb = os.environ.get(ENV_VAR)
    models = [describe(source, settings) for source in sources]
    client = cluster = None  # started at the first fit the cache lacks: a warm rerun needs no cluster
    try:
        futures = {}
        caches = {}
        for i, (source, model) in enumerate(zip(sources, models)):
            if model.status != OK:
                continue  # failed or skipped before any fit, as in the serial run
            cache = caches[i] = _model_cache(source, settings, cache_dir)
            for group in groups:
                cached = _cached_fits(cache, group)
                if cached is not None:
                    model.fits.update(cached)
                    continue
                if client is None:
                    client, cluster = _client(scheduler, workers)
                future = client.submit(fit_group, source, group, settings, progress, posteriordb, pure=False,
                                       key=f"fit-{i}-{model.name}-{group[0]}-{uuid.uuid4().hex[:8]}")
                futures[future] = (i, group)
        outstanding = Counter(i for i, _ in futures.values())

        def finished(i: int) -> None:
            models[i].fits = {m: models[i].fits[m] for m in METHODS if m in models[i].fits}
            if on_model is not None:
                on_model(models[i])

        for i in range(len(models)):
            if outstanding[i] == 0:  # every fit from the cache, or the model failed before any fit
                finished(i)
        for future in as_completed(list(futures)) if futures else ():
            i, group = futures[future]
            model = models[i]
            try:
                part = future.result()
            except Exception as error:  # a lost worker (KilledWorker) or a failure outside the fits
                reason = f"dask task failed: {one_line(error)}"
                print(f"{model.name}: {', '.join(group)} failed: {reason}", file=sys.stderr)
                model.fits.update(_failed_fits(model, group, reason))
            else:
                if part.status != OK:  # the model built here but not on the worker
                    model.fits.update(_failed_fits(model, group, f"on the worker: {part.reason}"))
                else:
                    _store(caches[i], part)
                    model.fits.update(part.fits)
                    model.wall_seconds += part.wall_seconds
            outstanding[i] -= 1
            if outstanding[i] == 0:
                finished(i)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return StudyResult(models=models, settings=settings, methods=methods,
                       wall_seconds=time.perf_counter() - start, versions=versions(), command=command)


def _cached_fits(cached, group: list[str]) -> dict[str, Fit] | None:
    """The group's fits when every one of them is cached or does not apply, else None (the group runs).

    As in ``run_model``: a method that does not apply is skipped with its reason (only the
    skips of ``Method.stores_skip`` are stored; they are read back like fits), every other
    one is read from the cache.
    """
    if cached is None:
        return None
    cache, run = cached
    fits = {}
    for method in group:
        reason = METHODS[method].applies(run)
        if reason:
            fit = run.new_fit(method, status=SKIPPED, reason=reason)
        else:
            fit = cache.load(method)
            if fit is None:
                return None
            fit.info["cache"] = "reused"
        fits[method] = run.fits[method] = mark_flagged(fit)
    return fits


def _store(cached, part: ModelResult) -> None:
    """Store a finished task's fits in the client's cache as it arrives (as ``run_model`` does)."""
    if cached is None:
        return
    cache, _ = cached
    for method, fit in part.fits.items():
        if fit.status == FAILED or (fit.status == SKIPPED and not METHODS[method].stores_skip):
            continue
        try:
            cache.store(method, fit)
            fit.info["cache"] = "stored"
        except OSError as error:  # e.g. a full disk: the fit itself is fine
            print(f"{part.name}: {method} not cached: {one_line(error)}", file=sys.stderr)
