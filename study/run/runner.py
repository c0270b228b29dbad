"""Run the methods on the models: a failing fit never costs the others.

Models run one after another, or in worker processes (``workers > 1``); each
worker resolves its model from its source (a built-in name or a file path),
so user model files need not be importable by name.

A fit that raises is marked ``failed`` with a one-line reason and the next
method runs; a model whose data or log joint cannot be built is ``failed`` as a
whole and the next model runs. A fit that finishes but fails a diagnostic
(NUTS divergences above ``MAX_DIVERGENT_FRACTION``; an SVI fit whose σ still
moves, ``SIGMA_DRIFT_LIMIT``, or misses the fixed point σᵢ⁻² = E_q[Hᵢᵢ] by more
than its stated SE bound) keeps its numbers and is marked ``flagged``. With a cache folder, every finished fit is stored as soon
as it finishes and reused by a rerun (``study.run.cache``).
"""

from __future__ import annotations

import math
import os
import platform
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import pyro
import torch

from models import ModelSpec, builtin_models, load_model_file
from models._posteriordb import PosteriorDBUnavailable

from study.run.cache import FitCache, model_fingerprint, safe_name
from study.core.context import ModelRun
from study.methods import METHODS
from study.methods.reference import NUTS_KIND, reference_kind
from study.core.errors import one_line
from study.core.results import FAILED, FLAGGED, OK, SKIPPED, Fit, ModelResult, StudyResult
from study.core.settings import Settings
from study.core.structure import hierarchical_scales
from study.checks.shape import check_shapes
from study.core.memory import PeakMemory, fix_mmap_threshold

# A NUTS run with more divergent transitions than this fraction of its draws is
# flagged: divergences mean the sampler missed regions of high curvature, so its
# sd may be biased (Betancourt 2017, "A Conceptual Introduction to HMC", sec. 6.2).
MAX_DIVERGENT_FRACTION = 0.01
# An SVI fit whose sigma changed by more than this fraction between the two halves of
# its averaging window has not stopped moving: flagged. The change counted is the largest
# one beyond its Monte Carlo noise (``info["sigma_drift_beyond_noise"]``, see
# ``study.methods.svi.drift_beyond_noise``; the raw ``sigma_drift`` for fits without it),
# so that noise among many parameters does not flag a converged fit.
SIGMA_DRIFT_LIMIT = 0.05


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
    """Raise ``BadData`` unless ``data`` is a ``dict[str, torch.Tensor]`` the study can fit.

    Refused, each with the key, the count and the first index: NaN or inf in a
    floating tensor, a dimension of size zero, and an integer or boolean tensor
    where the model needs floats (observed at a continuous site, or where the
    model fails to run on it).
    """
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
    for key, value in data.items():
        if 0 in value.shape:
            dim = list(value.shape).index(0)
            raise BadData(f"{spec.name}: data key {key!r} is empty: shape {tuple(value.shape)} "
                          f"has size 0 in dimension {dim}")
        if value.is_floating_point() or value.is_complex():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                where = torch.nonzero(~finite)[0].tolist()
                first = value[tuple(where)].item()
                count = int((~finite).sum())
                raise BadData(f"{spec.name}: data key {key!r} has {count} non-finite value"
                              f"{'s' if count > 1 else ''} (NaN or inf) of {value.numel()}; the first, "
                              f"{first}, at index {tuple(where)}")
    _check_dtypes(spec, data)


def _check_dtypes(spec: ModelSpec, data: dict) -> None:
    """Refuse integer or boolean data where the model needs floats (a trace of the model tells)."""
    from pyro import poutine

    discrete = {k: v for k, v in data.items() if not (v.is_floating_point() or v.is_complex())}
    if not discrete:
        return
    state = pyro.util.get_rng_state()  # the check must not move any random stream
    try:
        trace = poutine.trace(spec.model).get_trace(**data)
    except Exception as error:
        if not re.search(r"dtype|scalar type|Long|Int|Bool|Byte", str(error)):
            return  # not about the data's type: the fit reports it, with its cause
        keys = ", ".join(f"{k!r} ({str(v.dtype).replace('torch.', '')}, {v.numel()} values, first at index "
                         f"{(0,) * v.dim()})" for k, v in discrete.items())
        raise BadData(f"{spec.name}: data key {keys} is not floating point and the model fails on it "
                      f"({one_line(error)}); give floats, e.g. torch.tensor(..., dtype=torch.float64)") from None
    finally:
        pyro.util.set_rng_state(state)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        value = site["value"]
        key = next((k for k, v in discrete.items() if v is value), None)
        support = getattr(site["fn"], "support", None)
        if key is not None and support is not None and not support.is_discrete:
            raise BadData(
                f"{spec.name}: data key {key!r} is {str(value.dtype).replace('torch.', '')} ({value.numel()} values, "
                f"first at index {(0,) * value.dim()}) but observed at site {name!r} of a continuous "
                f"{type(site['fn']).__name__}; give floats, e.g. torch.tensor(..., dtype=torch.float64)"
            )


def _prior_notes(run: ModelRun) -> list[str]:
    notes = []
    for site in run.joint.sites:
        if not site.is_normal_prior:
            # ImproperUniform: Stan's implicit prior on a parameter with no prior statement.
            prior = "flat (improper)" if site.prior_name == "ImproperUniform" else site.prior_name
            notes.append(
                f"Latent `{site.name}` has a {prior} prior, not a Gaussian: the question is "
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
    drift = info.get("sigma_drift_beyond_noise", info.get("sigma_drift"))
    if isinstance(drift, (int, float)) and math.isfinite(drift) and drift > SIGMA_DRIFT_LIMIT:
        beyond = " beyond its Monte Carlo noise" if "sigma_drift_beyond_noise" in info else ""
        out.append(
            f"σ had not stopped moving: it changed by {100.0 * drift:.3g}% between the halves of the averaging "
            f"window{beyond} (limit {100.0 * SIGMA_DRIFT_LIMIT:g}%); more steps are needed"
        )
    diagnosis = (info.get("fixed_point") or {}).get("diagnosis") or {}
    if diagnosis.get("off"):
        names = diagnosis["off"]
        out.append(
            f"fixed-point residual σᵢ²E_q[Hᵢᵢ] − 1 beyond {diagnosis.get('z_limit', 3.0):.2g} SE for {len(names)} of "
            f"{len(fit.param_names) or len(names)} parameters (largest |z| {diagnosis.get('max_abs_z', float('nan')):.3g}, "
            f"verdict: {diagnosis.get('verdict', '?')}): σ is not at the mean-field fixed point"
        )
    for k, seed in enumerate(info.get("fixed_point_per_seed") or []):
        if seed.get("off"):
            out.append(
                f"seed {k}: fixed-point residual beyond {seed.get('z_limit', 3.0):.2g} SE for {seed['off']} parameters "
                f"(largest |z| {seed.get('max_abs_z', float('nan')):.3g}, verdict: {seed.get('verdict', '?')}): "
                "this seed's σ is not at its own fixed point"
            )
    return out


def mark_flagged(fit: Fit) -> Fit:
    """``fit``, its status ``flagged`` with the reasons when ``flags`` finds any (an ok fit only)."""
    reasons = flags(fit) if fit.status == OK else []
    if reasons:
        fit.status, fit.reason = FLAGGED, "; ".join(reasons)
    return fit


def model_files(spec: ModelSpec) -> list[str]:
    """The source files of a model's own functions: a failure there is reported with its line."""
    files = []
    for function in (spec.model, spec.data, getattr(spec, "exact_posterior", None)):
        code = getattr(function, "__code__", None)
        if code is not None and code.co_filename not in files:
            files.append(code.co_filename)
    return files


def _source_name(source) -> str:
    return source.name if isinstance(source, ModelSpec) else Path(str(source)).stem


def run_model(
    source: str | ModelSpec,
    methods: list[str],
    settings: Settings,
    progress: bool = True,
    cache_dir: Path | None = None,
    cache_only: bool = False,
) -> ModelResult | None:
    """Every requested method on one model. Never raises for a failing fit or model.

    Parameters
    ----------
    source : str or ModelSpec
        A built-in model's name, a model file's path, or a spec (in-process only).
    cache_dir : Path, optional
        Fit cache folder (``<out>/cache``): finished fits are stored there and
        reused when their key matches; None computes every fit.
    cache_only : bool
        Compute nothing: return None as soon as a fit is not in the cache (``run_study``
        reads warm models in its own process and sends only the others to workers).
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
        cache = None
        if cache_dir is not None:
            source_path = "" if isinstance(source, ModelSpec) else str(source)
            cache = FitCache(cache_dir, model_fingerprint(spec, source_path, data, versions()), settings)
            if cache_only and not any(cache.path(name).is_file() for name in methods):
                # Nothing under this key (the code or settings changed): the worker that
                # computes the model builds it; building it here too would be wasted.
                return None
        run = ModelRun.create(spec, settings, data, progress=progress)
        check_shapes(run.joint)  # before any fit: a mis-broadcast model stops here, naming the site
    except PosteriorDBUnavailable as error:
        result.status, result.reason = SKIPPED, str(error)
        return result
    except Exception as error:  # a broken model fails alone
        result.status, result.reason = FAILED, one_line(error, model_files(spec))
        return result
    result.param_names = list(run.joint.param_names)
    result.layout = [(s.variable_name, s.offset, tuple(s.unconstrained_shape)) for s in run.joint.sites]
    result.notes.extend(_prior_notes(run))
    try:  # for the report's likely causes (a funnel); a model it cannot trace is simply not assessed
        result.scale_children = hierarchical_scales(spec.model, data)
    except Exception:  # noqa: BLE001
        result.scale_children = None
    result.reference_kind = reference_kind(run)
    for name, method in METHODS.items():
        if name not in methods:
            continue
        reason = method.applies(run)
        if reason:
            fit = run.new_fit(name, status=SKIPPED, reason=reason)
            if method.stores_skip:  # a rerun, whose earlier fits come from the cache, could not decide it cheaply
                _store(cache, spec, name, fit)
            run.fits[name] = fit
            continue
        fit = cache.load(name) if cache is not None else None
        if fit is None and cache_only:
            return None
        if fit is None:
            pyro.set_rng_seed(run.seed(name))
            try:
                with PeakMemory() as memory:
                    fit = method.fit(run)
                # A fit that ran (not one that found it does not apply, which the cold
                # run's applies() check makes without running: the two must be the same fit).
                if memory.above_base is not None and isinstance(fit.info, dict) and fit.ok:
                    fit.info.setdefault("peak_rss_above_base_bytes", memory.above_base)
            except Exception as error:  # the report marks it failed, with the reason
                fit = run.new_fit(name, status=FAILED, reason=one_line(error, model_files(spec)))
                if progress:
                    print(f"{spec.name}: {name} failed: {fit.reason}", file=sys.stderr)
                if isinstance(error, ArithmeticError):
                    _store(cache, spec, name, fit)  # a numerical outcome the same key reproduces
            else:
                _store(cache, spec, name, fit)
        else:
            fit.info["cache"] = "reused"
        run.fits[name] = mark_flagged(fit)
    result.fits = dict(run.fits)
    result.wall_seconds = time.perf_counter() - start
    return result


def _store(cache, spec, name: str, fit: Fit) -> None:
    """Store a fit in the cache; a fit that cannot be stored is only computed again next run."""
    if cache is None:
        return
    try:
        cache.store(name, fit)
        fit.info["cache"] = "stored"
    except (OSError, TypeError) as error:  # a full disk, a value plain data cannot hold
        print(f"{spec.name}: {name} not cached: {one_line(error)}", file=sys.stderr)


# A worker checks this often (seconds) whether the process that started it still runs.
PARENT_POLL_SECONDS = 0.5


def _watch_parent(parent: int) -> None:
    """Worker initialiser: end this worker as soon as its parent is gone.

    A parent killed by SIGKILL (or the out-of-memory killer) runs no clean-up,
    and its workers would wait forever on a pipe nobody writes to. Once the
    parent has died the worker is re-parented, so ``os.getppid()`` changes; a
    daemon thread polls it every ``PARENT_POLL_SECONDS`` and exits the process
    (``os._exit``: no clean-up that could block). Finished fits are already in
    the cache; a fit cut short leaves at most a temporary file, which the next
    run removes.
    """
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker(source: str, methods: list[str], settings: Settings, progress: bool,
            cache_dir: Path | None = None, after_model=None) -> tuple[ModelResult, dict, dict]:
    """One model's fits and, with ``after_model``, what it returns for them (``run_after``)."""
    model = run_model(source, methods, settings, progress, cache_dir)
    return (model, *run_after(model, after_model))


def run_after(model: ModelResult, after_model) -> tuple[dict, dict]:
    """``after_model(model)`` in the worker that fitted ``model``, for a model that ran.

    The study passes ``study.report.write.draw_model_section``: the model's report section
    and ArviZ files, made while the other workers still fit. A failure there costs nothing
    but the time: the fits are kept, and the report draws that model again.
    """
    if after_model is None or model.status != OK:
        return {}, {}
    try:
        return after_model(model)
    except Exception as error:
        print(f"{model.name}: report section not drawn in its worker: {one_line(error)}", file=sys.stderr)
        return {}, {}


def _collect(future, source: str) -> tuple[ModelResult, dict, dict]:
    """A worker's result; a worker that died (e.g. killed for memory) fails its model alone."""
    try:
        return future.result()
    except Exception as error:
        name = _source_name(source)
        return ModelResult(name=name, title=name, description="", param_names=[], fits={},
                           status=FAILED, reason=f"worker process failed: {one_line(error)}"), {}, {}


def versions() -> dict[str, str]:
    """Versions of Python and of the packages behind the numbers."""
    return dict(_versions())


@lru_cache(maxsize=None)
def _versions() -> tuple[tuple[str, str], ...]:
    import pyro
    from importlib.metadata import version

    # Package metadata, not imports: importing arviz and laplace-torch (which brings
    # torchvision) costs a warm run 3 s that it would spend on nothing else.
    return (
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("pyro-ppl", pyro.__version__),
        ("arviz", version("arviz")),
        ("laplace-torch", version("laplace-torch")),
        ("numpy", version("numpy")),
    )


def _has_cache_entries(cache_dir: Path, source) -> bool:
    """Whether a built-in model or a spec has a cache folder with entries (files go to workers)."""
    if isinstance(source, ModelSpec):
        name = source.name
    elif isinstance(source, str) and source in builtin_models():
        name = source
    else:
        return False
    folder = Path(cache_dir) / safe_name(name)
    return folder.is_dir() and any(folder.glob("*.npz"))


def model_line(model: ModelResult) -> str:
    """One line for a finished model: its name, seconds and how its fits ended."""
    if model.status != OK:
        return f"{model.name}: {model.status}: {model.reason}"
    counts = {status: sum(f.status == status for f in model.fits.values()) for status in (OK, FLAGGED, FAILED, SKIPPED)}
    skipped = f", {counts[SKIPPED]} skipped" if counts[SKIPPED] else ""
    return (f"{model.name}: {model.wall_seconds:.1f} s, fits {counts[OK]} ok, {counts[FLAGGED]} flagged, "
            f"{counts[FAILED]} failed{skipped}")


# method -> the method whose fit (and shared draws) it reuses; they run in one task. The
# curvature references are taken at the mean-field mean when svi_meanfield runs, at the MAP
# otherwise (``study.methods.curvature.evaluation_point``): in a task of their own they would
# describe another point than in the serial run.
FIT_DEPENDENCIES = {
    "svi_meanfield_lr": "svi_meanfield",
    "data_sweep": "svi_meanfield",
    "hessian_diag": "svi_meanfield",
    "ggn_diag": "svi_meanfield",
    "kfac": "svi_meanfield",
    "laplace_last_layer": "svi_meanfield",
    "kl_ablation": "expected_loss",
}

def method_groups(methods: list[str]) -> list[list[str]]:
    """The requested methods split into tasks: each with the methods that reuse its fit.

    Parameters
    ----------
    methods : list of str
        Method names (any order).

    Returns
    -------
    list of list of str
        Groups in ``METHODS`` order, methods inside a group in ``METHODS`` order.
    """
    ordered = [m for m in METHODS if m in methods]

    def root(method: str) -> str:
        while method in FIT_DEPENDENCIES and FIT_DEPENDENCIES[method] in ordered:
            method = FIT_DEPENDENCIES[method]
        return method

    groups: dict[str, list[str]] = {}
    for method in ordered:
        groups.setdefault(root(method), []).append(method)
    return list(groups.values())


def merge_parts(parts: list[ModelResult]) -> ModelResult:
    """One model's result from the results of its method groups (each a ``run_model`` on a group).

    Every group built the same model from the same seeds, so any built part describes it; the
    fits come in ``METHODS`` order and the wall time is the groups' sum. A model that failed or
    was skipped before its fits is that part's result.
    """
    for part in parts:
        if part.status != OK:
            return part
    model = parts[0]
    fits = {name: fit for part in parts for name, fit in part.fits.items()}
    model.fits = {name: fits[name] for name in METHODS if name in fits}
    model.wall_seconds = sum(part.wall_seconds for part in parts)
    return model


def run_study(
    sources: list[str],
    methods: list[str],
    settings: Settings,
    workers: int = 1,
    progress: bool = True,
    command: str = "",
    cache_dir: Path | None = None,
    after_model=None,
    on_model=None,
) -> StudyResult:
    """Run ``methods`` on every model in ``sources`` (built-in names or file paths).

    ``cache_dir``: the fit cache folder (see ``run_model``), or None. ``after_model``: with
    workers, a picklable function each worker calls on its model as soon as the model's
    fits end (``run_after``), returning figure-cache and ArviZ-manifest entries that
    ``StudyResult.drawn`` and ``drawn_idata`` collect (the study passes
    ``study.report.write.draw_model_section``). ``on_model``: called in this process with
    each model's ``ModelResult`` as soon as it is finished (the command line prints
    ``model_line``), in the order they finish.
    """
    start = time.perf_counter()
    methods = [m for m in METHODS if m in methods]
    models: list[ModelResult | None] = [None] * len(sources)
    if workers > 1 and len(sources) > 1 and cache_dir is not None:
        # A model whose fits are all cached is read here: a worker would spend longer
        # starting (importing torch, Pyro, scikit-learn) than reading it.
        for i, source in enumerate(sources):
            if _has_cache_entries(cache_dir, source):
                models[i] = run_model(source, methods, settings, progress, cache_dir, cache_only=True)
                if models[i] is not None and on_model is not None:
                    on_model(models[i])
    todo = [i for i, model in enumerate(models) if model is None]
    drawn: dict = {}
    drawn_idata: dict = {}
    # Fewer models than workers would leave workers idle: each model's methods then go out as
    # tasks of their own, in the groups that share a fit (``method_groups``), as on Dask.
    groups = method_groups(methods) if workers > 1 and len(todo) < workers else []
    tasks = [(i, group) for i in todo for group in groups] if len(groups) > 1 else [(i, None) for i in todo]
    if workers > 1 and len(tasks) > 1:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=get_context("spawn"),
                                   initializer=_watch_parent, initargs=(os.getpid(),))
        try:
            futures = {pool.submit(_worker, sources[i], group or methods, settings, progress, cache_dir,
                                   None if group else after_model): (i, group)
                       for i, group in tasks}
            parts, pieces = {}, {}
            outstanding = Counter(i for i, _ in tasks)
            for future in as_completed(futures):
                i, group = futures[future]
                if group is None:
                    models[i], *parts[i] = _collect(future, sources[i])
                else:
                    pieces.setdefault(i, []).append(_collect(future, sources[i])[0])
                outstanding[i] -= 1
                if outstanding[i]:
                    continue
                if group is not None:
                    models[i] = merge_parts(pieces.pop(i))
                if on_model is not None:
                    on_model(models[i])
            for i in todo:  # in the models' order, whatever order they finished in
                entries, idata = parts.get(i, ({}, {}))
                drawn.update(entries)
                drawn_idata.update(idata)
        except BaseException:
            # Ctrl-C or a kill: stop the workers now rather than after their models.
            # Finished fits are already in the cache; a worker stopped mid-write leaves
            # only a temporary file, which the command removes once they are joined.
            processes = list((getattr(pool, "_processes", None) or {}).values())
            for process in processes:
                process.terminate()
            # Wait for them and for the pool's own thread, so that its queues are closed and
            # their semaphores released: no "leaked semaphore objects" warning at exit.
            for process in processes:
                process.join(timeout=10)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
    else:
        for i in todo:
            models[i] = run_model(sources[i], methods, settings, progress, cache_dir)
            if on_model is not None:
                on_model(models[i])
    return StudyResult(
        models=models,
        settings=settings,
        methods=methods,
        wall_seconds=time.perf_counter() - start,
        versions=versions(),
        command=command,
        drawn=drawn,
        drawn_idata=drawn_idata,
    )
