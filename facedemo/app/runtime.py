"""Process-wide settings for serving the networks fast on a small CPU; entry points call them once."""
from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Let glibc keep freed activation buffers for the next forward pass instead of returning them.

    By default each large tensor gets fresh pages from the kernel and gives them back when freed;
    the page faults made a batch of 8 SFace faces ~25% slower and a 1080p photo with 8 faces ~10%
    slower end to end (measured in `python -m facedemo bench`). The cost: up to a few hundred MB
    stay mapped. Returns False where the C library is not glibc (nothing is changed then).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(param, value)
        for param, value in (
            (_M_MMAP_THRESHOLD, 32 << 20),
            (_M_TRIM_THRESHOLD, 1 << 30),
            (_M_TOP_PAD, 256 << 20),
        )
    )
