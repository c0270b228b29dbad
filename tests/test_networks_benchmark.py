"""The networks benchmark's bookkeeping: cost-vs-d slopes and the peak-memory sampler."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("networks_benchmark", ROOT / "benchmarks" / "networks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slopes_recover_a_power_law_and_skip_missing_fits():
    bench = _benchmark()
    records = [{"d": d, "fits": {"a": {"wall_seconds": 3.0 * d**1.5}, "b": {"wall_seconds": 2.0}}}
               for d in (1e3, 1e4, 1e5)]
    records[0]["fits"]["c"] = {"wall_seconds": 1.0}  # one rung only: no slope
    slopes = bench.slopes(records, "wall_seconds")
    assert abs(slopes["a"] - 1.5) < 1e-9 and abs(slopes["b"]) < 1e-9 and slopes["c"] is None


def test_peak_memory_sees_an_allocation():
    bench = _benchmark()
    with bench.PeakMemory(interval=0.001) as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        block[::512] += 1.0
        import time

        time.sleep(0.05)
    del block
    assert memory.above_base >= 32 * 2**20
