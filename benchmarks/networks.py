"""Cost of the network methods against the number of weights d: wall seconds and peak memory.

    python benchmarks/networks.py [--models digits_mlp_1k digits_mlp_10k digits_mlp_100k]
                                  [--methods svi_meanfield ivon ...] [--steps 3000] [--seeds 3]
                                  [--device cpu|cuda] [--threads N] [--out reports/networks-benchmark.json]

Each rung runs in a fresh process: the MAP search first (timed on its own, shared by
the methods), then every method in turn. Per fit it records the wall seconds and the
peak memory above what the process held before the fit: resident memory sampled
every 5 ms on the CPU (``/proc/self/statm``), ``torch.cuda.max_memory_allocated`` on a
GPU. It prints, per method, the least-squares slopes of log seconds and log memory
against log d (1 means linear in d). Machines are shared: the numbers are single runs
under whatever load there was, and the JSON says how many CPUs the process saw.

The rungs run one after another, each on ``--threads`` threads (default: every CPU, so
"on 2 cores" means what it says). The study itself fits every model on one thread, so
that its numbers do not depend on the thread count; there a lone large rung uses one core
(``--threads 1`` times that).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
DEFAULT_MODELS = ["digits_mlp_1k", "digits_mlp_10k", "digits_mlp_100k"]
# The methods that scale: the mean-field SVI fit, IVON, and the O(d) curvature methods
# (those present in the methods table are run; the others are reported as absent).
DEFAULT_METHODS = ["svi_meanfield", "ivon", "ggn_diag", "kfac", "hessian_diag"]


def run_rung(model: str, methods: list[str], steps: int, seeds: int, device: str, threads: int = 1) -> dict:
    """Every method on one model in this process, on ``threads`` threads; returns the rung's record."""
    import torch

    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float64)
    from models import builtin_models
    from study.core.context import ModelRun
    from study.core.errors import one_line
    from study.core.settings import Settings
    from study.methods import METHODS
    from study.methods.laplace import map_and_hessian
    from study.core.memory import PeakMemory
    from study.run.runner import mark_flagged

    settings = Settings.make(svi_steps=steps, svi_seeds=seeds, device=None if device == "cpu" else device)
    run = ModelRun.create(builtin_models()[model], settings)
    record = {"model": model, "d": run.joint.dim, "threads": threads, "fits": {}}
    cuda = device == "cuda"

    def measure(name, fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        entry = {}
        with PeakMemory(interval=0.005) as memory:
            try:
                result = fn()
                if hasattr(result, "status"):
                    result = mark_flagged(result)  # the study's own flags: the same status as a study run
                entry["status"] = getattr(result, "status", "ok")
                if getattr(result, "reason", ""):
                    entry["reason"] = result.reason
            except Exception as error:
                entry["status"], entry["reason"] = "failed", one_line(error)
                result = None
        if cuda:
            torch.cuda.synchronize()
            entry["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        entry["wall_seconds"] = time.perf_counter() - start
        entry["peak_rss_above_base_bytes"] = memory.above_base
        record["fits"][name] = entry
        print(f"{model} (d={run.joint.dim}) {name}: {entry['status']} {entry['wall_seconds']:.1f} s, "
              f"+{memory.above_base / 2**20:.0f} MiB", file=sys.stderr, flush=True)
        return result

    measure("map", lambda: map_and_hessian(run))
    for method in methods:
        if method not in METHODS:
            record["fits"][method] = {"status": "absent", "reason": "not in the methods table"}
            continue
        fit = measure(method, lambda: METHODS[method].fit(run))
        if fit is not None and method in ("svi_meanfield", "ivon"):
            info = fit.info
            extra = {k: info.get(k) for k in ("steps", "particles", "data_subsampling", "sigma_drift",
                                              "h_moved_median", "h_over_init_quantiles", "sd_rel_se", "fit_dtype",
                                              "per_seed_wall_seconds", "fixed_point_seconds",
                                              "sigma_drift_beyond_noise_per_seed", "steps_per_seed",
                                              "mean_spread_over_sigma")}
            fixed = info.get("fixed_point") or {}
            extra["fixed_point_by_site"] = fixed.get("by_site")
            extra["fixed_point_error"] = fixed.get("error")
            extra["fixed_point_by_site_per_seed"] = [seed.get("by_site") for seed in info.get("fixed_point_per_seed") or []]
            record["fits"][method].update({k: v for k, v in extra.items() if v is not None})
    return record


def slopes(records: list[dict], key: str) -> dict[str, float | None]:
    """Per method: least-squares slope of log(value) against log(d) over the rungs where it ran."""
    out = {}
    methods = sorted({m for r in records for m in r["fits"]})
    for method in methods:
        points = [(math.log(r["d"]), math.log(r["fits"][method][key]))
                  for r in records if r["fits"].get(method, {}).get(key, 0) > 0]
        if len(points) < 2:
            out[method] = None
            continue
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        sxx = sum((x - mx) ** 2 for x, _ in points)
        out[method] = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else None
    return out


def main(argv=None) -> int:
    from study.core.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    defaults = Settings()
    parser.add_argument("--steps", type=int, default=defaults.svi_steps, help="step cap (default: the study's)")
    parser.add_argument("--seeds", type=int, default=defaults.svi_seeds,
                        help="mean-field seeds (default: the study's, so that status and residuals compare)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads per rung (default: every CPU; the study uses 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "networks-benchmark.json")
    parser.add_argument("--rung", help=argparse.SUPPRESS)  # internal: run one rung, print JSON
    args = parser.parse_args(argv)
    if args.rung:
        print(json.dumps(run_rung(args.rung, args.methods, args.steps, args.seeds, args.device, args.threads)))
        return 0
    if args.threads < 1:
        print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda: torch sees no CUDA device here", file=sys.stderr)
            return 2
    records, started = [], time.perf_counter()
    for model in args.models:
        command = [sys.executable, str(Path(__file__).resolve()), "--rung", model, "--methods", *args.methods,
                   "--steps", str(args.steps), "--seeds", str(args.seeds), "--device", args.device,
                   "--threads", str(args.threads)]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if result.returncode != 0 or not result.stdout.strip():
            records.append({"model": model, "error": f"exit {result.returncode}",
                            "wall_seconds": time.perf_counter() - start})
            continue
        record = json.loads(result.stdout.strip().splitlines()[-1])
        record["process_wall_seconds"] = time.perf_counter() - start
        records.append(record)
        partial = {"rungs": records}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(partial, indent=1) + "\n")  # what is done survives a kill
    good = [r for r in records if "fits" in r]
    summary = {
        "rungs": records,
        "slope_wall_seconds_vs_d": slopes(good, "wall_seconds"),
        "slope_peak_rss_vs_d": slopes(good, "peak_rss_above_base_bytes"),
        "slope_gpu_peak_vs_d": slopes(good, "gpu_peak_bytes") if args.device == "cuda" else None,
        "settings": {"steps": args.steps, "seeds": args.seeds, "device": args.device, "methods": args.methods,
                     "threads": args.threads},
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "total_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    for r in good:
        line = ", ".join(f"{m} {f['wall_seconds']:.1f} s" for m, f in r["fits"].items() if "wall_seconds" in f)
        print(f"{r['model']} d={r['d']}: {line}")
    for key in ("slope_wall_seconds_vs_d", "slope_peak_rss_vs_d", "slope_gpu_peak_vs_d"):
        if summary[key]:
            print(key + ": " + ", ".join(f"{m} {s:.2f}" for m, s in summary[key].items() if s is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
