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

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
import time

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 << 20
# glibc's default trim threshold, which stays in force once mallopt has fixed the mmap threshold.
TRIM_THRESHOLD_BYTES = 128 << 10
# mallopt takes a C int.
MALLOPT_MAX = 2**31 - 1

# The threshold this process fixed (``fix_mmap_threshold``), None while glibc chooses its own.
_fixed_threshold: int | None = None


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 (not glibc, e.g. musl: AttributeError)
        return libc
    except (OSError, AttributeError):
        return None


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; False where there is no glibc (a no-op)."""
    global _fixed_threshold
    libc = _libc()
    if libc is None or not libc.mallopt(M_MMAP_THRESHOLD, int(threshold)):
        return False
    _fixed_threshold = int(threshold)
    return True


@contextlib.contextmanager
def large_blocks_from_heap(largest: int):
    """Inside: blocks up to ``largest`` bytes come from the heap and stay there when freed.

    A batched Hessian-vector product whose temporaries are larger than the fixed mmap
    threshold maps each of them afresh, and the kernel zeroes every page on its first
    write: on a 3,000 x 2,000 design broadcast against the weights (48 MB a temporary) two
    thirds of each product went to page faults (55 ms against 18 ms per product). The
    loop allocates the same sizes pass after pass, so from the heap they are reused
    instead. On exit the threshold is fixed again and the heap's free memory is returned
    to the system (``malloc_trim``), so that the resident set after the loop is what it
    was. A no-op where this process has not fixed the threshold (``fix_mmap_threshold``:
    the study's workers do) or where there is no glibc.
    """
    libc = _libc() if _fixed_threshold is not None else None
    largest = min(int(largest), MALLOPT_MAX)
    # glibc refuses thresholds above its own limit; then nothing changes.
    raised = libc is not None and largest > _fixed_threshold and bool(libc.mallopt(M_MMAP_THRESHOLD, largest))
    if raised:
        # Freed blocks at the heap's top stay until they exceed two passes: at one pass the top
        # was trimmed and faulted in again pass after pass (measured 64 s against 36 s a Hessian).
        libc.mallopt(M_TRIM_THRESHOLD, min(2 * largest, MALLOPT_MAX))
    try:
        yield raised
    finally:
        if raised:
            libc.mallopt(M_MMAP_THRESHOLD, _fixed_threshold)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
            libc.malloc_trim(0)


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


class LiveBytes:
    """The most bytes of tensor storage that a block of code held alive at once, to within
    ``TOLERANCE`` above (never below).

    Every storage an operation creates inside the block is counted from the operation's
    return until it is freed (a weak reference to the storage); a result that shares an
    input's storage (a view, an in-place operation) is not new, and storage that existed
    before the block is not counted. It sees what the dispatcher allocates, backward passes
    included, and nothing else (a Python object, a C library's buffer).

    Which storages were freed is looked up only when the running sum could set a peak more
    than ``TOLERANCE`` above the last one found: until then the sum (which counts no frees,
    so never falls short) bounds every total. Looking it up after every operation cost a
    pass over all live storages per operation: 8 s of Lotka-Volterra's 24-s MAP and
    Hessian, 22,000 operations with hundreds of storages alive. The count depends on the
    operations alone, not on the addresses the allocator hands out: a new storage at a
    freed one's address does not take the freed one out of the sum before a lookup would.
    """

    TOLERANCE = 0.05

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                counter._count(out, (args, kwargs))
                return out

        self.peak = 0  # the bound: at least every total the block held
        self._found = 0  # the largest total found exactly, at a sweep
        self._live: dict[int, tuple[object, int]] = {}
        self._unswept = 0  # bytes of storages found freed (their address reused) since the last sweep
        self._total = 0  # the live storages' bytes as of the last sweep, plus every new one since
        self._mode = _Mode()

    def _sweep(self) -> None:
        """Forget the storages freed since the last sweep: ``_total`` becomes exact."""
        import torch

        for key, (ref, size) in list(self._live.items()):
            if torch.UntypedStorage._expired(ref):
                torch.UntypedStorage._free_weak_ref(ref)
                del self._live[key]
                self._total -= size
        self._total -= self._unswept
        self._unswept = 0

    def _count(self, out, inputs) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        # A view or an in-place result shares an input's storage: nothing new.
        shared = {t.untyped_storage().data_ptr() for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self._live and torch.UntypedStorage._expired(self._live[key][0]):
                # Freed since the last sweep and its address reused: its bytes stay in the sum
                # until the next sweep, as if its address had not been reused.
                ref, size = self._live.pop(key)
                torch.UntypedStorage._free_weak_ref(ref)
                self._unswept += size
            if key and key not in self._live and key not in shared:
                self._live[key] = (storage._weak_ref(), storage.nbytes())
                self._total += storage.nbytes()
        if self._total > self._found * (1.0 + self.TOLERANCE):
            self._sweep()
            self._found = max(self._found, self._total)
        self.peak = max(self.peak, self._total)

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        self._mode.__exit__(*exc)
        for ref, _ in self._live.values():
            torch.UntypedStorage._free_weak_ref(ref)
        self._live.clear()
        return False
