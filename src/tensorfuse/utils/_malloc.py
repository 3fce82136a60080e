"""Keep freed memory in the process instead of returning it to the OS after every tensor.

glibc serves allocations above its mmap threshold (at most 32 MB) with fresh ``mmap`` pages and
unmaps them on free, so every large activation of a forward/backward pass is paid again in page
faults: on a 2-core VM, allocating and filling a 50 MB tensor took 3x as long as writing the same
bytes into existing memory. Disabling mmap for allocations and raising the trim threshold lets
the heap keep its pages across calls (the process keeps its peak resident size, which a training
or MD run reaches anyway). This changes process-wide behaviour, so the library never calls it on
import; the command line, the ASE calculator and the benchmarks do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def tune_malloc(trim_threshold_bytes: int = 1 << 34) -> bool:
    """Configure glibc malloc as described above; returns whether it was applied (Linux/glibc only)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, min(trim_threshold_bytes, 2**31 - 1)) == 1 and ok
    _applied = ok
    return ok
