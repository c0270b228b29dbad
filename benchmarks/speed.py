"""Where the study's time goes: per (model, method) and per run, cold and warm; and the SVI step.

    python benchmarks/speed.py [--models NAME ...] [--model FILE ...] [--quick] [--steps-per-check 300]
                               [--step-models seed_linear logistic_breast_cancer]
                               [--baseline OLD_CHECKOUT --repeats 3] [--out reports/speed.json]

With ``--baseline`` (a checkout of the old code, e.g. ``git worktree add ../old <commit>``)
the cold run is timed ``--repeats`` times for the old and the current code in turn (old,
new, old, new, ...), so that both see the same machine, and the medians are compared:
wall time, the fits' seconds per method, and the largest resident set of any of the run's
processes (``wait4``). No warm run and no SVI step then.

1. **Runs.** ``python -m study.compare`` in a fresh process on a fresh output folder (cold:
   every fit computed and stored in the cache), then the same command again on that folder
   (warm: every fit read back from the cache). Wall time of each run, the fits' own wall
   seconds per (model, method) from ``results.json``, and per model.
2. **The SVI step.** For each model of ``--step-models``: seconds per step of the study's
   mean-field SVI (Pyro ``SVI`` with ``AutoNormal``, the checked JIT ``Trace_ELBO``, the
   sigma-scaled Adam) against a plain PyTorch loop (``torch.optim.Adam`` on ``(mu, log
   sigma)``, the same number of reparameterised particles through the same vectorised log
   joint, ``study.core.joint.FlatJoint.log_joint_batched``). Same particles, one thread.

Machines are shared and noisy: the JSON keeps every number; quote the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(out: Path, extra: list[str], root: Path = ROOT) -> dict:
    """One ``study.compare`` run of the code in ``root``, in a fresh process; its wall time, the
    largest resident set of its processes and what its results.json says."""
    command = [sys.executable, "-m", "study.compare", "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env=dict(os.environ, PYTHONPATH=str(root)))
        # wait4: the run's rusage, whose ru_maxrss is the largest of the process and its workers.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        errors = stderr.read().decode(errors="replace")
    wall = time.perf_counter() - start
    if process.returncode not in (0, 1):
        raise SystemExit(f"study run failed ({process.returncode}): {errors.strip().splitlines()[-1:]}")
    results = json.loads((out / "results.json").read_text())
    per_fit, per_model, reused = {}, {}, 0
    for name, model in results["models"].items():
        per_model[name] = model.get("wall_seconds")
        for method, fit in model["fits"].items():
            info = fit.get("info") or {}
            reused += info.get("cache") == "reused"
            if fit["status"] in ("ok", "flagged"):
                per_fit[f"{name}/{method}"] = {
                    "seconds": info.get("wall_seconds"), "cache": info.get("cache"),
                    "steps": info.get("steps_per_seed", info.get("steps")),
                    "peak_rss_above_base_bytes": info.get("peak_rss_above_base_bytes"),
                }
    return {"wall_seconds": wall, "fits_seconds": results.get("wall_seconds"), "exit_code": process.returncode,
            "max_rss_bytes": usage.ru_maxrss * 1024, "fits_reused": reused, "per_model_seconds": per_model,
            "per_fit": per_fit}


def compare_in_turn(baseline: Path, extra: list[str], repeats: int) -> dict:
    """The cold run of the old code (``baseline``) and of this checkout, in turn, ``repeats`` times."""
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for repeat in range(repeats):
        for label, root in (("old", baseline), ("new", ROOT)):
            with tempfile.TemporaryDirectory() as folder:
                run = run_once(Path(folder) / "out", extra + ["--no-cache"], root)
            run["per_method_seconds"] = per_method(run["per_fit"])
            runs[label].append(run)
            print(f"{label} #{repeat + 1}: {run['wall_seconds']:.1f} s wall (fits {run['fits_seconds']:.1f} s), "
                  f"largest resident set {run['max_rss_bytes'] / 1e9:.2f} GB", flush=True)
    summary = {}
    for label, group in runs.items():
        methods = sorted({m for run in group for m in run["per_method_seconds"]})
        summary[label] = {
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in group),
            "median_fits_seconds": statistics.median(r["fits_seconds"] for r in group),
            "median_max_rss_bytes": statistics.median(r["max_rss_bytes"] for r in group),
            "median_per_method_seconds": {
                m: statistics.median(r["per_method_seconds"].get(m, 0.0) for r in group) for m in methods},
        }
    return {"repeats": repeats, "runs": runs, "medians": summary}


def per_method(per_fit: dict) -> dict:
    """Seconds summed over models, per method."""
    totals: dict[str, float] = {}
    for key, value in per_fit.items():
        method = key.split("/", 1)[1]
        totals[method] = totals.get(method, 0.0) + (value["seconds"] or 0.0)
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def time_svi_step(name: str, steps: int, particles: int) -> dict:
    """Seconds per step: the study's SVI against a plain PyTorch loop over the same log joint."""
    import pyro
    import torch
    from pyro.infer import SVI
    from pyro.infer.autoguide import AutoNormal

    from models import builtin_models
    from study.core.context import ModelRun
    from study.core.settings import Settings
    from study.methods.optim import ScaledLocAdam
    from study.methods.svi import CheckedJitELBO

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    spec = builtin_models()[name]
    pyro.set_rng_seed(0)
    run = ModelRun.create(spec, Settings.make(particles=particles))
    joint = run.joint

    pyro.clear_param_store()
    guide = AutoNormal(spec.model, init_loc_fn=run.init_loc_fn, init_scale=0.1)
    guide(**run.data)
    svi = SVI(spec.model, guide, ScaledLocAdam(guide, lr=0.01),
              CheckedJitELBO(particles, joint.max_plate_nesting))
    for _ in range(5):  # compile and check the JIT trace outside the clock
        svi.step(**run.data)
    start = time.perf_counter()
    for _ in range(steps):
        svi.step(**run.data)
    pyro_step = (time.perf_counter() - start) / steps

    loc = joint.init_z.clone().requires_grad_(True)
    log_scale = torch.full_like(loc, -2.3).requires_grad_(True)
    optimiser = torch.optim.Adam([loc, log_scale], lr=0.01)
    generator = torch.Generator().manual_seed(0)

    def step():
        optimiser.zero_grad()
        eps = torch.randn(particles, joint.dim, generator=generator)
        z = loc + log_scale.exp() * eps
        loss = -(joint.log_joint_batched(z).mean() + log_scale.sum())
        loss.backward()
        optimiser.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    plain_step = (time.perf_counter() - start) / steps
    return {"model": name, "d": joint.dim, "particles": particles, "steps_timed": steps,
            "study_svi_seconds_per_step": pyro_step, "plain_torch_seconds_per_step": plain_step,
            "ratio": pyro_step / plain_step}


def _relative(arg: str) -> str:
    path = Path(arg)
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else arg


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME", help="built-in models (default: all)")
    parser.add_argument("--model", nargs="+", metavar="FILE", help="model files, passed to study.compare")
    parser.add_argument("--baseline", type=Path, metavar="OLD_CHECKOUT",
                        help="a checkout of the old code: time old and new cold runs in turn")
    parser.add_argument("--repeats", type=int, default=1, help="with --baseline: runs of each (default 1)")
    parser.add_argument("--study-args", nargs="+", default=[], metavar="ARG",
                        help="further study.compare arguments (e.g. --study-args=--memory-budget=500M)")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="methods (default: all)")
    parser.add_argument("--quick", action="store_true", help="time the --quick run instead of the default one")
    parser.add_argument("--workers", type=int, help="passed to study.compare")
    parser.add_argument("--step-models", nargs="*", default=["seed_linear", "logistic_breast_cancer"],
                        metavar="NAME", help="models whose SVI step is timed (none: skip)")
    parser.add_argument("--steps-per-check", type=int, default=300, help="SVI steps timed per model")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "speed.json")
    args = parser.parse_args(argv)
    extra = (["--quick"] if args.quick else []) + (["--models", *args.models] if args.models else []) \
        + (["--methods", *args.methods] if args.methods else []) \
        + (["--workers", str(args.workers)] if args.workers else []) \
        + (["--model", *[str(Path(f).resolve()) for f in args.model]] if args.model else []) + args.study_args
    # Recorded with paths relative to the checkout: the JSON names no machine's folders.
    report: dict = {"command_extra": [_relative(arg) for arg in extra]}
    if args.baseline is not None:
        report["baseline"] = str(args.baseline)
        report.update(compare_in_turn(args.baseline.resolve(), extra, args.repeats))
        for label, medians in report["medians"].items():
            print(f"{label}: median {medians['median_wall_seconds']:.1f} s wall, fits "
                  f"{medians['median_fits_seconds']:.1f} s, largest resident set "
                  f"{medians['median_max_rss_bytes'] / 1e9:.2f} GB; per method: "
                  + ", ".join(f"{m} {v:.1f}" for m, v in medians["median_per_method_seconds"].items()))
        report["machine"] = machine()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        cold = run_once(out, extra)
        warm = run_once(out, extra)
    for label, run in (("cold", cold), ("warm", warm)):
        run["per_method_seconds"] = per_method(run["per_fit"])
        report[label] = run
        print(f"{label}: {run['wall_seconds']:.1f} s wall (fits {run['fits_seconds']:.1f} s, "
              f"{run['fits_reused']} fits reused)")
    print("cold, seconds per method (summed over models): "
          + ", ".join(f"{m} {s:.1f}" for m, s in report["cold"]["per_method_seconds"].items()))
    steps = [time_svi_step(name, args.steps_per_check, 32) for name in args.step_models]
    report["svi_step"] = steps
    for row in steps:
        print(f"SVI step, {row['model']} (d={row['d']}, {row['particles']} particles): study "
              f"{1e3 * row['study_svi_seconds_per_step']:.2f} ms, plain PyTorch "
              f"{1e3 * row['plain_torch_seconds_per_step']:.2f} ms, ratio {row['ratio']:.2f}")
    if steps:
        report["svi_step_median_ratio"] = statistics.median(r["ratio"] for r in steps)
    report["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
