"""How long the report of a model with many parameters takes (CPU seconds, one thread).

    python benchmarks/large_report.py [D ...]

Builds the synthetic study of ``tests/report_data.py`` with ``D`` parameters (default
2000) and times ``write_all`` into a temporary folder: wall and CPU seconds, and the
slowest report functions.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    from report_data import large_study
    from study.report.write import write_all

    for d in [int(a) for a in argv] or [2000]:
        study = large_study(d)
        with tempfile.TemporaryDirectory() as out:
            wall, cpu = time.perf_counter(), time.process_time()
            profile = cProfile.Profile(time.process_time)
            profile.runcall(write_all, study, Path(out))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{d} parameters: report in {wall:.1f} s wall, {cpu:.1f} s CPU")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(r"study/report", 8)


if __name__ == "__main__":
    main(sys.argv[1:])
