"""Process memory: the peak so far, and handing freed heap back to the operating system.

A run's peak RSS is what decides whether it fits a machine. Python frees large arrays into the
C allocator, which keeps the pages: a stage that freed a gigabyte still holds it, and the next
stage's allocations stack on top of it in the peak. ``release`` asks glibc to return them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys

__all__ = ["peak_rss_mb", "release"]


def peak_rss_mb() -> float:
    """The highest resident set size of this process so far, in MB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20  # KB on Linux, bytes on macOS


def release() -> None:
    """Collect garbage and return the allocator's free pages to the OS (glibc ``malloc_trim``; elsewhere a no-op)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
            pass
