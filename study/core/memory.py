"""Keep the resident memory of long autograd loops at what they use.

glibc's ``malloc`` raises its mmap threshold each time a large block is freed
(up to 32 MB), after which blocks of a few MB come from the heap instead of
fresh mappings. A loop of Hessian-vector products that allocates and frees
data-sized temporaries (a 1,000 x 2,000 design matrix broadcast against the
weights is 16 MB) then fragments the heap, and the resident set grows by
gigabytes although the live tensors stay below one (measured: a 2,000-weight
logistic regression's exact Hessian, 17 GB before, 0.9 GB after). A fixed
threshold keeps every block of 4 MB and more in its own mapping, returned to
the system when freed (``mallopt(3)``, ``M_MMAP_THRESHOLD``).

Each such block costs page faults when it is first written, so the threshold sits
above the activations of an SVI step and below the Hessian loops' temporaries. At
1 MB the 8-particle activations of the 1,210-weight digits network (1.8 MB) took a
fresh mapping per operation. Its ``--quick`` fits (medians of 3 fresh processes) took
26.6 s at 1 MB (9.8 s of it in the kernel, 8.3 million page faults) and 24.0 s at
4 MB (6.8 s, 4.7 million), with the same peak resident memory (2.15 GB). Left to
glibc they took 20.6 s, but then the Hessian loops' 15 MB temporaries come from the
heap again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 << 20


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; False where there is no glibc (a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False


class PeakMemory:
    """Peak resident memory of this process above what it held on entry, sampled by a thread.

    Linux reads ``/proc/self/statm`` every ``interval`` seconds (and once more on exit);
    elsewhere ``above_base`` is None. The runner wraps every fit in one
    (``info["peak_rss_above_base_bytes"]``); ``benchmarks/networks.py`` every rung's fits.
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.base = self.peak = None
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        self.base = self.peak = self.rss()
        if self.base is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self):
        now = self.rss()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()
        return False

    @property
    def above_base(self) -> int | None:
        return None if self.base is None else self.peak - self.base
