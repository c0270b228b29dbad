"""The networks benchmark's bookkeeping: cost-vs-d slopes (its memory sampler is tests/test_memory.py's)."""

import importlib.util
from pathlib import Path

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
