"""Peak memory per fit: the sampler sees a short-lived allocation, and every fit records one."""

import sys
import time

import numpy as np
import pytest

from study.core.memory import PeakMemory
from study.core.settings import Settings
from study.run.runner import run_model

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")


@linux_only
def test_the_sampler_sees_an_allocation_freed_before_the_block_ends():
    size = 200 * 2**20
    with PeakMemory(interval=0.001) as memory:
        block = np.ones(size // 8)  # written, so every page is resident
        time.sleep(0.05)  # 50 samples while it is held
        del block
    assert memory.above_base >= 0.9 * size
    # Nothing allocated: nothing above the start beyond the interpreter's own noise.
    with PeakMemory(interval=0.001) as quiet:
        time.sleep(0.02)
    assert quiet.above_base < 0.05 * size


@linux_only
def test_every_fit_records_its_peak_memory():
    result = run_model("seed_linear", ["laplace_full", "svi_meanfield"], Settings.make(quick=True, svi_steps=50),
                       progress=False)
    for fit in result.fits.values():
        assert isinstance(fit.info["peak_rss_above_base_bytes"], int) and fit.info["peak_rss_above_base_bytes"] >= 0
