"""Cost of ``python -m study.diagnose`` on the network ladder: wall seconds and peak memory against d.

    python benchmarks/diagnose.py [--models digits_mlp_1k digits_mlp_10k digits_mlp_100k]
                                  [--threads 2] [--steps 200] [--scale 0.02]
                                  [--out reports/diagnose-benchmark.json]

Per rung, a guide is made in one fresh process: its means from ``--steps`` Adam steps on
``-log p`` from the model's start (a briefly trained point, not a converged fit), every sd
``--scale``, saved as a loc/scale file. The diagnosis then runs in another fresh process on
``--threads`` threads, as the command line (``study.diagnose.main``, all four outputs
written). Recorded: the command's wall seconds (reading the model and the file, the
diagnosis, writing the outputs; not Python's start), the diagnosis's own seconds and their
split, and the process's peak resident memory (``resource.getrusage``, the whole process:
torch, the data and the diagnosis). The time does not depend on how well the guide was
trained. Machines are shared: the numbers are single runs under whatever load there was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["digits_mlp_1k", "digits_mlp_10k", "digits_mlp_100k"]

DIAGNOSE = """
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
from study.diagnose import main
start = time.perf_counter()
code = main({argv!r})
seconds = time.perf_counter() - start
print(json.dumps({{"rc": code, "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def prepare(model: str, path: Path, steps: int, scale: float, threads: int) -> dict:
    """A loc/scale file for ``model``: Adam on ``-log p`` from the model's start, every sd ``scale``."""
    import torch

    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float64)
    from models import builtin_models
    from study.core.joint import FlatJoint

    spec = builtin_models()[model]
    joint = FlatJoint(spec.model, spec.data(), spec.init_loc_fn)
    z = joint.init_z.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=0.01)
    for _ in range(steps):
        loss = -joint.log_joint(z)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    z = z.detach()
    torch.save({s.name: {"loc": z[s.slice].reshape(s.unconstrained_shape).clone(),
                         "scale": torch.full(tuple(s.unconstrained_shape), scale)} for s in joint.sites}, path)
    return {"d": joint.dim}


def model_file(model: str) -> str:
    return str(ROOT / "models" / f"{model}.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--scale", type=float, default=0.02)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "diagnose-benchmark.json")
    parser.add_argument("--prepare", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps(prepare(args.prepare[0], Path(args.prepare[1]), args.steps, args.scale, args.threads)))
        return 0
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    rungs = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            params = Path(folder) / f"{model}.pt"
            made = subprocess.run([sys.executable, __file__, "--prepare", model, str(params), "--steps", str(args.steps),
                                   "--scale", str(args.scale), "--threads", str(args.threads)],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
            if made.returncode != 0:
                raise SystemExit(f"{model}: preparing the guide failed: {made.stderr.strip().splitlines()[-1]}")
            d = json.loads(made.stdout.strip().splitlines()[-1])["d"]
            out = Path(folder) / model
            argv = ["--model", model_file(model), "--params", str(params), "--out", str(out)]
            run = subprocess.run([sys.executable, "-c", DIAGNOSE.format(threads=args.threads, argv=argv)],
                                 cwd=ROOT, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(f"{model}: the diagnosis failed: {run.stderr.strip()[-500:]}")
            record = json.loads(run.stdout.strip().splitlines()[-1])
            result = json.loads((out / "diagnosis.json").read_text())
            record.update(model=model, d=d, threads=args.threads, diagnosis_seconds=result["seconds"],
                          residual_seconds=result["method"]["residual_seconds"],
                          hessian_at_mean_seconds=result["method"]["hessian_at_mean_seconds"],
                          estimator=result["method"]["estimator"], hessian_at_mean=result["method"]["hessian_at_mean"],
                          json_mib=(out / "diagnosis.json").stat().st_size / 2**20,
                          verdicts={s["site"]: s["verdict"] for s in result["sites"]})
            rungs.append(record)
            print(f"{model} (d = {d:,}): {record['seconds']:.1f} s (diagnosis {record['diagnosis_seconds']:.1f} s: "
                  f"residual {record['residual_seconds']:.1f} s, H_ii at the mean {record['hessian_at_mean_seconds']:.1f} s), "
                  f"peak RSS {record['peak_rss_mib']:.0f} MiB", flush=True)
    summary = {"command": "python benchmarks/diagnose.py " + " ".join(sys.argv[1:]), "cpus": os.cpu_count(),
               "machine": platform.machine(), "python": platform.python_version(), "guide_steps": args.steps,
               "guide_scale": args.scale, "rungs": rungs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
