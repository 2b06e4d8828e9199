"""Keep freed memory in the process: glibc's allocator, tuned once for a training process.

A training step allocates and frees the same large tensors every step. glibc serves a
block of 128 KiB or more with its own mmap and unmaps it on free (the threshold moves up
with the sizes it sees, but not far enough), and it returns the top of the heap to the
kernel when 128 KiB are free there. Either way the next step touches fresh pages, and
every 4 KiB page costs a page fault and a zeroing. On `tiny` that was thousands of faults
and a quarter of the forward's time under Muon, whose step frees a few MB of temporaries
just before the forward: most of Muon's "hidden" forward and backward cost (the counts
and times: benchmarks/2026-12-xeon-amx.md).

The fix is two `mallopt` settings: blocks up to 32 MiB (glibc's maximum for this
setting on 64-bit) come from the heap, and the heap is never trimmed. Memory then stays
at the step's high-water mark, which a training process reaches in its first steps
anyway. Applied where the step runs on the CPU (a GPU run's host memory is not the step's).
Where the C library is not glibc (macOS, musl) or the user tuned it through
glibc's own `MALLOC_*` variables or `GLIBC_TUNABLES`, or preloaded another allocator, nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: mallopt refuses more
TRIM_THRESHOLD = (1 << 31) - 1  # an int: "never" in practice

_state: str | None = None


def retain_freed_memory() -> str:
    """Apply the settings once per process; returns what was done, for run_start and bench."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def allocator_label() -> str:
    """What run_start and bench record: the settings, or "default" where nothing was applied (a GPU run)."""
    return _state or "default"


def _apply() -> str:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "default (not glibc)"
    tuned = any(k.startswith("MALLOC_") for k in os.environ) or any("malloc" in os.environ.get(k, "") for k in ("GLIBC_TUNABLES", "LD_PRELOAD"))
    if tuned:
        return "default (MALLOC_*, GLIBC_TUNABLES or LD_PRELOAD set by the user)"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "default (mallopt unavailable)"
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if mmap_ok and trim_ok:
        return "glibc: mmap threshold 32 MiB, no trim"
    return f"glibc: mmap threshold {'32 MiB' if mmap_ok else 'default'}, trim {'off' if trim_ok else 'default'} (mallopt refused one)"
