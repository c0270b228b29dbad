"""Wall time and peak resident memory of the curvature references on the network ladder.

Each (model, method) runs in a fresh process, so its peak resident set
(``resource.getrusage``) is its own. The point is the model's init (a prior
draw): the cost does not depend on where the curvature is taken. Prints one
JSON line per run and the log-log slope of time and memory against d per method.

Usage::

    python benchmarks/curvature_cost.py                       # digits 1k, 10k, 100k
    python benchmarks/curvature_cost.py --models digits_mlp_1k --methods hessian_diag
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_default_dtype(torch.float64); torch.set_num_threads(1)
from study.core.memory import fix_mmap_threshold; fix_mmap_threshold()
import laplace, laplace.curvature  # imports are not part of the cost
from models import builtin_models
from study.core.context import ModelRun
from study.core.settings import Settings
from study.methods import METHODS
name, method = sys.argv[1], sys.argv[2]
run = ModelRun.create(builtin_models()[name], Settings.make(quick=True))
run.cache["map"] = {"z": run.joint.init_z, "hessian": None}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
fit = METHODS[method].fit(run)
wall = time.perf_counter() - start
print(json.dumps({"model": name, "d": run.joint.dim, "method": method, "wall_s": round(wall, 3),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "rss_before_mb": round(before), "measured": fit.info.get("measured")}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["digits_mlp_1k", "digits_mlp_10k", "digits_mlp_100k"])
    parser.add_argument("--methods", nargs="+", default=["hessian_diag", "ggn_diag", "kfac"])
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        for method in args.methods:
            try:
                out = subprocess.run([sys.executable, "-c", ONE, model, method], cwd=ROOT, capture_output=True,
                                     text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(json.dumps({"model": model, "method": method, "timeout_s": args.timeout}), flush=True)
                continue
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode or not lines:
                print(json.dumps({"model": model, "method": method, "error": out.stderr.strip().splitlines()[-1:]}))
                continue
            rows.append(json.loads(lines[-1]))
            print(lines[-1], flush=True)
    import numpy as np

    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        if len(mine) >= 2:
            log_d = np.log([r["d"] for r in mine])
            time_slope = np.polyfit(log_d, np.log([r["wall_s"] for r in mine]), 1)[0]
            memory_slope = np.polyfit(log_d, np.log([r["peak_rss_mb"] - r["rss_before_mb"] + 1 for r in mine]), 1)[0]
            print(f"{method}: wall time ~ d^{time_slope:.2f}, added peak memory ~ d^{memory_slope:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
