"""Fresh memory faulted in ahead of its first write, in one system call per tensor instead of one page fault per page.

    prefault(address, nbytes)     # before filling a new multi-MB buffer: the fill then writes to resident pages

A new process's weights are fresh anonymous memory: every 4 KiB page costs a fault on first touch (about a quarter
of a seeded build's time on the 2-core development VM: 3-4 s of system time for 7.6 GB). Linux 5.14's
`madvise(MADV_POPULATE_WRITE)` faults a whole range in one call, about 40% cheaper per page than faulting page by
page (measured there: 0.27 vs 0.45 ns a byte). The values are untouched (fresh pages are zero either way, and the
caller overwrites them); where the call is missing (macOS, Windows, older Linux) this does nothing, and the pages
are faulted in by the fill as before. Only whole pages inside the buffer are asked for, so no other allocation's
memory is touched.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from functools import lru_cache

MADV_POPULATE_WRITE = 23       # linux/mman.h (5.14)
MIN_BYTES = 1 << 20            # smaller buffers: the fill's own faults are cheap enough


@lru_cache(maxsize=1)
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        f = libc.madvise
    except (OSError, AttributeError):
        return None
    f.argtypes, f.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return f


def prefault(address: int, nbytes: int) -> bool:
    """Fault in, for writing, the whole pages of [address, address + nbytes); True if the kernel did (False: too
    small, or not supported here, and nothing was done)."""
    madvise = _madvise()
    if madvise is None or nbytes < MIN_BYTES:
        return False
    page = mmap.PAGESIZE
    start = -(-address // page) * page
    end = (address + nbytes) // page * page
    if end <= start:
        return False
    return madvise(start, end - start, MADV_POPULATE_WRITE) == 0
