"""Wall time of the study's two standard runs, in fresh processes.

    python benchmarks/timing.py [--quick-repeats 3] [--full-repeats 1] [--out reports/benchmark.json]

Each run is ``python -m study.compare`` in a subprocess with its own output folder
and no fit cache, so the numbers include start-up and everything a user waits for.
Machines are shared and noisy: the medians are what to quote, and the spread says
how much to trust them.
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


def time_run(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "study.compare", "--out", out, "--no-progress", *extra]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"study run failed ({result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick-repeats", type=int, default=3)
    parser.add_argument("--full-repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmark.json")
    args = parser.parse_args(argv)
    extra = ["--no-cache"] if "--no-cache" in subprocess.run(
        [sys.executable, "-m", "study.compare", "--help"], cwd=ROOT, capture_output=True, text=True
    ).stdout else []
    results = {}
    for label, flags, repeats in (("quick", ["--quick"], args.quick_repeats), ("full", [], args.full_repeats)):
        if repeats < 1:
            continue
        times = [time_run(flags + extra) for _ in range(repeats)]
        results[label] = {"seconds": times, "median_seconds": statistics.median(times)}
        print(f"{label}: median {statistics.median(times):.1f} s over {repeats} run(s): "
              + ", ".join(f"{t:.1f}" for t in times))
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
