"""Command line: ``python -m study.compare``.

Fits every model by every method, writes ``comparison.csv``, ``results.json``,
``idata/<model>/<method>.nc``, ``report.md`` and ``report.html`` into ``--out``.

Exit codes: 0 every requested fit ran; 1 some fit or model failed, or a fit
was flagged (e.g. NUTS divergences, an SVI fit short of convergence; everything
else is written); 2 bad input: an unknown name, bad data, an unsafe model name,
a seed outside [0, 2**32), an ``--out`` that cannot be written (nothing written,
not even ``--out``; nothing fitted); 130 interrupted (Ctrl-C or SIGTERM:
no output is half-written, finished fits stay in ``<out>/cache`` and the same
command resumes from them; ``--no-cache`` recomputes everything).

Usage::

    python -m study.compare                         # all models, all methods
    python -m study.compare --quick --models seed_linear linear_correlated
    python -m study.compare --model my_model.py --methods svi_meanfield laplace_full
    python -m study.compare --models networks --methods svi_meanfield hessian_diag ggn_diag kfac
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import warnings
import shlex
import sys
import time
import traceback
from pathlib import Path

from models import ModelFileError, ModelSpec, builtin_models, default_models, load_model_file, model_groups
from models._posteriordb import ENV_VAR, PosteriorDBUnavailable, database_root

from study.methods import METHODS
from study.core.errors import one_line
from study.core.files import unsafe_name_reason, unwritable_reason
from study.run.cache import safe_name
from study.run.runner import BadData, check_data, model_line, run_study
from study.core.settings import MAX_SEED, Settings


DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))


class InputError(ValueError):
    """Bad command-line input: reported in one line, exit code 2, nothing written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise InputError(message)


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}


def _bytes(text: str) -> int:
    """``"500M"``, ``"2G"``, ``"1.5G"`` or a number of bytes -> bytes."""
    number, unit = text.strip()[:-1], text.strip()[-1:].upper()
    if unit not in _UNITS or unit == "":
        number, unit = text.strip(), ""
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500M, 2G)") from None
    if not (math.isfinite(value) and value >= 1e6):
        raise argparse.ArgumentTypeError(f"must be at least 1M, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m study.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME", help="built-in models or groups of them (e.g. networks) to run (default: every model not run on request only)")
    parser.add_argument("--model", nargs="+", action="extend", default=[], metavar="FILE",
                        help="model files to add (each defines SPEC = ModelSpec(...))")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help=f"methods (default: all of {', '.join(METHODS)})")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default reports/ for the default study; reports/<model> when "
                             "--models or --model choose the models, so that the default study's report stays)")
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test of the whole study")
    parser.add_argument("--steps", type=int, help="SVI steps per fit (overrides the default)")
    parser.add_argument("--seeds", type=int, metavar="K",
                        help="independent svi_meanfield runs whose mean and standard error are reported "
                             "(default 3; 2 with --quick)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"models fitted in parallel processes (default {DEFAULT_WORKERS}: this machine's cores, at most 4); "
                             "with --scheduler local, the LocalCluster's worker processes")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="fit on a dask.distributed cluster: its scheduler's address (tcp://host:8786), "
                             "or 'local' for a LocalCluster on this machine (needs pip install .[dask])")
    parser.add_argument("--posteriordb", type=Path, metavar="PATH",
                        help=f"a posteriordb clone (default: ${ENV_VAR}); without one the shipped posteriors are read "
                             "and a model needing another posterior is skipped")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute every fit (default: reuse finished fits from <out>/cache)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the network fits (mean-field SVI, IVON) run (default cpu)")
    parser.add_argument("--memory-budget", type=_bytes, default=None, metavar="SIZE",
                        help="memory an exact Hessian may add to a worker while it is built, e.g. 500M or "
                             "2G (default 1G); it sets how many Hessian-vector products share a pass, "
                             "never a number of the results")
    parser.add_argument("--list", action="store_true", help="list models and methods, then exit")
    return parser


DEFAULT_OUT = Path("reports")


def default_out(args) -> Path:
    """``reports/`` for the default study; ``reports/<first model>[-and-N-more]`` for a chosen set.

    A run of one's own model without ``--out`` must not overwrite the default study's
    results (the README's answer comes from them).
    """
    chosen = list(args.models or []) + [Path(path).stem for path in args.model]
    if not chosen:
        return DEFAULT_OUT
    more = f"-and-{len(chosen) - 1}-more" if len(chosen) > 1 else ""
    return DEFAULT_OUT / safe_name(f"{chosen[0]}{more}")


def resolve_sources(args) -> list[str]:
    known = builtin_models()
    sources: list[str] = []
    if args.models:
        groups = model_groups()
        unknown = [m for m in args.models if m not in known and m not in groups]
        if unknown:
            raise InputError(f"unknown model {', '.join(unknown)}; known models: {', '.join(known)}; "
                             f"groups: {', '.join(groups)}")
        repeated = sorted({m for m in args.models if args.models.count(m) > 1})
        if repeated:
            raise InputError(f"model {', '.join(repeated)} given more than once; give each model once")
        for m in args.models:
            # A group expands to its models; a model named twice (alone and in a group) runs once.
            sources.extend(n for n in groups.get(m, [m]) if n not in sources)
    elif not args.model:
        sources.extend(default_models())
    names = set(sources)
    for path in args.model:
        spec = load_model_file(path)
        unsafe = unsafe_name_reason(spec.name)
        if unsafe:
            raise InputError(f"{path}: model name {spec.name!r} cannot name output files: {unsafe}; "
                             "use letters, digits, '.', '_' and '-'")
        if spec.name in names:
            raise InputError(f"model name {spec.name!r} from {path} is already taken")
        check_model_file(spec, path)
        names.add(spec.name)
        sources.append(str(Path(path).resolve()))
    return sources


def _where(error: BaseException, path: str) -> str:
    """`` (line N: code)`` of the deepest frame of ``error`` inside ``path``, or ""."""
    target = os.path.realpath(path)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.realpath(f.filename) == target]
    return f" (line {frames[-1].lineno}: {frames[-1].line})" if frames else ""


def check_model_file(spec: ModelSpec, path: str) -> None:
    """Refuse a user's model file the study cannot run, before anything is written.

    ``data()`` must return ``dict[str, torch.Tensor]`` and every latent site must
    be continuous. A model that raises while it is traced is not refused here: that
    is a failure of the model, reported in its section (exit code 1).
    """
    import torch

    from study.core.joint import FlatJoint, ModelScopeError

    torch.set_default_dtype(torch.float64)  # as in the runner
    try:
        data = spec.data()
    except PosteriorDBUnavailable:
        return  # skipped with a note at run time
    except Exception as error:
        raise InputError(f"{path}: data() raised {one_line(error)}{_where(error, path)}; "
                         "expected data() -> dict[str, torch.Tensor]") from None
    try:
        check_data(spec, data)
    except BadData as error:
        raise InputError(f"{path}: {error}") from None
    try:
        FlatJoint(spec.model, data, spec.init_loc_fn)
    except ModelScopeError as error:  # Pyro appends the trace's shapes on further lines
        raise InputError(f"{path}: model {spec.name!r}: {str(error).splitlines()[0]}") from None
    except Exception:
        pass


def validate(args) -> None:
    if args.methods:
        unknown = [m for m in args.methods if m not in METHODS]
        if unknown:
            raise InputError(f"unknown method {', '.join(unknown)}; known methods: {', '.join(METHODS)}")
    if not 0 <= args.seed < MAX_SEED:
        raise InputError(f"--seed must be >= 0 and < 2**32 (0 to {MAX_SEED - 1}), got {args.seed}")
    if args.steps is not None and args.steps <= 0:
        raise InputError(f"--steps must be a positive integer, got {args.steps}")
    if args.seeds is not None and args.seeds < 1:
        raise InputError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.scheduler is not None:
        from importlib.util import find_spec

        if find_spec("distributed") is None:
            raise InputError("--scheduler needs dask.distributed, which is not installed: pip install '.[dask]'")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no CUDA device here (use --device cpu)")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")


def main(argv: list[str] | None = None) -> int:
    """Run the study; returns the exit code (0 ok, 1 a fit failed or was flagged, 2 bad input,
    130 interrupted).

    ``--posteriordb`` reaches the worker processes through ``POSTERIORDB_PATH``; the
    variable is put back as it was when the run ends, so that a caller in the same
    process (a test, a notebook) does not inherit one run's database in the next.
    """
    before = os.environ.get(ENV_VAR)
    try:
        return _run(argv)
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


def _run(argv: list[str] | None) -> int:
    """``main`` without the environment's restoration."""
    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notices
    try:
        args = build_parser().parse_args(argv)
        if args.out is None:
            args.out = default_out(args)
        validate(args)
        if args.posteriordb is not None:
            os.environ[ENV_VAR] = str(args.posteriordb)
            database_root()  # a database given by hand must be one
        sources = resolve_sources(args)
        if not args.list:
            unwritable = unwritable_reason(args.out)
            if unwritable:  # before any fit: nothing is computed that could not be kept
                raise InputError(f"--out {args.out} is not writable: {unwritable}")
    except (InputError, ModelFileError, PosteriorDBUnavailable) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        print(f"error: {lines[0]}", file=sys.stderr)
        return 2
    if args.list:
        print("models: " + ", ".join(builtin_models()))
        print("groups: " + "; ".join(f"{g}: {', '.join(ms)}" for g, ms in model_groups().items()))
        print("methods: " + ", ".join(METHODS))
        return 0

    settings = Settings.make(quick=args.quick, seed=args.seed, svi_steps=args.steps, svi_seeds=args.seeds,
                             device=None if args.device == "cpu" else args.device,
                             memory_budget=args.memory_budget)
    methods = args.methods or list(METHODS)
    command = "python -m study.compare " + " ".join(shlex.quote(a) for a in argv)
    # Progress bars only on a terminal: a log gets one line per finished model instead.
    progress = not args.no_progress and sys.stderr.isatty()

    def on_model(model) -> None:  # at once: a log shows each model as it finishes
        print(model_line(model), flush=True)

    start = time.perf_counter()
    from study.core.files import remove_stale_temporaries
    from study.report.write import draw_model_section, write_all

    remove_stale_temporaries(args.out)  # left by a run that was killed while writing
    cache_dir = None if args.no_cache else args.out / "cache"
    try:
        if args.scheduler:
            from study.run.cluster import SchedulerError, run_study_dask

            try:
                study = run_study_dask(sources, methods, settings, args.scheduler, workers=args.workers,
                                       progress=progress, command=command.strip(), cache_dir=cache_dir,
                                       on_model=on_model)
            except SchedulerError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
        else:
            study = run_study(sources, methods, settings, workers=args.workers, progress=progress, on_model=on_model,
                              command=command.strip(), cache_dir=cache_dir,
                              after_model=functools.partial(draw_model_section, report_dir=args.out))
        paths = write_all(study, args.out, workers=1 if args.scheduler else args.workers)
    except KeyboardInterrupt:
        # A worker stopped in the middle of writing a cache entry or a figure is gone by now
        # (run_study joins its workers): its temporary file goes with it.
        remove_stale_temporaries(args.out)
        kept = "; finished fits are in the cache, the same command resumes" if cache_dir else ""
        print(f"interrupted: no output written or changed half-way{kept}", file=sys.stderr)
        return 130
    for model in study.models:
        if model.status != "ok":
            print(f"{model.name}: {model.status}: {model.reason}", file=sys.stderr)
    fits = [f for m in study.models for f in m.fits.values()]
    failed = [f"{f.model}/{f.method}" for f in fits if f.status == "failed"]
    flagged = [f"{f.model}/{f.method} ({f.reason})" for f in fits if f.status == "flagged"]
    reused = sum(1 for f in fits if f.info.get("cache") == "reused")
    cached = f"{reused} of {len(fits)} fits reused from {cache_dir}" if cache_dir else "cache off"
    print(f"wrote {paths['html']} and {paths['csv']} in {time.perf_counter() - start:.1f} s "
          f"(fits {study.wall_seconds:.1f} s; {cached})")
    try:  # the answer, last: what a log ends with
        from study.report.claims import claim_lines
        from study.report.summary import study_answer

        print("\n".join(["", "The answer over the models of this run:", *claim_lines(study_answer(study)),
                          f"The report: {paths['html']}"]), flush=True)
    except Exception as error:  # noqa: BLE001 (the outputs are written; a claim that cannot be said is no failure)
        print(f"the claims could not be printed: {one_line(error)}; the report: {paths['html']}", file=sys.stderr)
    if failed:
        print(f"failed fits: {', '.join(failed)}", file=sys.stderr)
    if flagged:
        print(f"flagged fits: {'; '.join(flagged)}", file=sys.stderr)
    return 0 if study.ok else 1


def _terminate(signum, frame):
    """SIGTERM ends the run like Ctrl-C: temporary files are removed, nothing is half-written."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
