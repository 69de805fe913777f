"""Process-wide settings for serving the networks fast on a small CPU; entry points call them once."""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> bool:
    """Let glibc keep freed activation buffers for the next forward pass instead of returning them.

    By default each large tensor gets fresh pages from the kernel and gives them back when freed;
    the page faults made a batch of 8 SFace faces ~25% slower and a 1080p photo with 8 faces ~10%
    slower end to end (measured in `python -m facedemo bench`). The cost: up to a few hundred MB
    stay mapped. Returns False where the C library is not glibc (nothing is changed then).

    Two arenas at most: gradio runs each request on whichever worker thread is free, and glibc
    gives threads arenas of their own (up to 8 per core), each keeping what it freed; 16 arenas
    held ~2 GB free after 64 analyses through the page (facedemo.tools.bench_page --sessions).
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
            (_M_ARENA_MAX, 2),
        )
    )


def resident_mb() -> float:
    """This process's resident memory now (VmRSS), in MiB; 0.0 where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def release_memory_when_idle(
    idle_s: float = 30.0, budget_mb: float = 512.0, check_s: float = 5.0
) -> threading.Thread | None:
    """Give the heap's free pages back to the system when the app is idle, or has grown by `budget_mb`.

    What tune_allocator keeps is fragmented by photos of every size: RSS grew ~5-18 MB per analysis
    without bound, nearly all of it free inside malloc (malloc_info). glibc's malloc_trim(0) returns
    every free page, interior ones too; after every request it made the next one ~28% slower (the
    page faults tune_allocator avoids), so it runs once the process has used under 5% of a core for
    `idle_s` seconds, or at once when RSS has grown `budget_mb` since the last trim. A daemon
    thread; None where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return None

    def watch() -> None:
        baseline = resident_mb()
        quiet_s = 0.0
        cpu = time.process_time()
        while True:
            time.sleep(check_s)
            now = time.process_time()
            quiet_s = quiet_s + check_s if now - cpu < 0.05 * check_s else 0.0
            cpu = now
            grown = resident_mb() - baseline
            if (quiet_s >= idle_s and grown > 16) or grown > budget_mb:
                trim(0)
                baseline, quiet_s, cpu = resident_mb(), 0.0, time.process_time()

    thread = threading.Thread(target=watch, name="release-memory", daemon=True)
    thread.start()
    return thread
