"""Command line: ``python -m study.compare``.

Fits every model by every method, writes ``comparison.csv``, ``results.json``,
``idata/<model>/<method>.nc``, ``report.md`` and ``report.html`` into ``--out``.

Exit codes: 0 every requested fit ran; 1 some fit or model failed (the others
are written); 2 bad input (nothing written).

Usage::

    python -m study.compare                         # all models, all methods
    python -m study.compare --quick --models seed_linear linear_correlated
    python -m study.compare --model my_model.py --methods svi_meanfield laplace_full
"""

from __future__ import annotations

import argparse
import os
import warnings
import shlex
import sys
import time
from pathlib import Path

from models import ModelFileError, builtin_models, load_model_file
from models._posteriordb import ENV_VAR

from .methods import METHODS
from .runner import run_study
from .settings import Settings


DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))


class InputError(ValueError):
    """Bad command-line input: reported in one line, exit code 2, nothing written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m study.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME", help="built-in models to run (default: all)")
    parser.add_argument("--model", nargs="+", action="extend", default=[], metavar="FILE",
                        help="model files to add (each defines SPEC = ModelSpec(...))")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help=f"methods (default: all of {', '.join(METHODS)})")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default reports/)")
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test of the whole study")
    parser.add_argument("--steps", type=int, help="SVI steps per fit (overrides the default)")
    parser.add_argument("--seeds", type=int, metavar="K",
                        help="independent svi_meanfield runs whose mean and standard error are reported "
                             "(default 3; 2 with --quick)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"models fitted in parallel processes (default {DEFAULT_WORKERS}: this machine's cores, at most 4)")
    parser.add_argument("--posteriordb", type=Path, metavar="PATH",
                        help=f"a posteriordb database (default: ${ENV_VAR}); without one those models are skipped")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--list", action="store_true", help="list models and methods, then exit")
    return parser


def resolve_sources(args) -> list[str]:
    known = builtin_models()
    sources: list[str] = []
    if args.models:
        unknown = [m for m in args.models if m not in known]
        if unknown:
            raise InputError(f"unknown model {', '.join(unknown)}; known models: {', '.join(known)}")
        sources.extend(args.models)
    elif not args.model:
        sources.extend(known)
    names = set(sources)
    for path in args.model:
        spec = load_model_file(path)
        if spec.name in names:
            raise InputError(f"model name {spec.name!r} from {path} is already taken")
        names.add(spec.name)
        sources.append(str(Path(path).resolve()))
    return sources


def validate(args) -> None:
    if args.methods:
        unknown = [m for m in args.methods if m not in METHODS]
        if unknown:
            raise InputError(f"unknown method {', '.join(unknown)}; known methods: {', '.join(METHODS)}")
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    if args.steps is not None and args.steps <= 0:
        raise InputError(f"--steps must be a positive integer, got {args.steps}")
    if args.seeds is not None and args.seeds < 1:
        raise InputError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")


def main(argv: list[str] | None = None) -> int:
    """Run the study; returns the exit code (0 ok, 1 some fit failed, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notices
    try:
        args = build_parser().parse_args(argv)
        validate(args)
        if args.posteriordb is not None:
            os.environ[ENV_VAR] = str(args.posteriordb)
        sources = resolve_sources(args)
    except (InputError, ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list:
        print("models: " + ", ".join(builtin_models()))
        print("methods: " + ", ".join(METHODS))
        return 0

    settings = Settings.make(quick=args.quick, seed=args.seed, svi_steps=args.steps, svi_seeds=args.seeds)
    methods = args.methods or list(METHODS)
    command = "python -m study.compare " + " ".join(shlex.quote(a) for a in argv)
    start = time.perf_counter()
    study = run_study(sources, methods, settings, workers=args.workers, progress=not args.no_progress,
                      command=command.strip())
    from .outputs import write_all

    paths = write_all(study, args.out)
    for model in study.models:
        if model.status != "ok":
            print(f"{model.name}: {model.status}: {model.reason}", file=sys.stderr)
    failed = [f"{m.name}/{f.method}" for m in study.models for f in m.fits.values() if f.status == "failed"]
    print(f"wrote {paths['html']} and {paths['csv']} in {time.perf_counter() - start:.1f} s "
          f"(fits {study.wall_seconds:.1f} s)")
    if failed:
        print(f"failed fits: {', '.join(failed)}", file=sys.stderr)
    return 0 if study.ok else 1


if __name__ == "__main__":
    sys.exit(main())
