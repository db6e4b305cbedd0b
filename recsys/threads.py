"""Threads one scoring block may use: the machine's cores shared by the blocks in flight.

A block alternates between single-threaded steps (feature joins, the sparse product, Python
bookkeeping) and steps that fan out (the text product in torch, LightFM's in BLAS, LightGBM's
prediction). An export keeps two blocks in flight to fill the single-threaded gaps; if each
fan-out step also takes every core, the two blocks' threads contend for the same cores and the
second block buys less than it could. Sharing them, side by side on the same models and users
(2 cores, k = 100): 396 -> 424 users/s at 100k users and items, 453 -> 472 at 1M users; the
lists are the same.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["block_threads", "threads_per_block", "limit_this_thread"]

_limit: int | None = None


def block_threads() -> int:
    """Threads a block's multi-threaded steps may take now: the limit in force, else every core."""
    return _limit if _limit is not None else os.cpu_count() or 1


def limit_this_thread(threads: int) -> None:
    """Cap the OpenMP steps (torch's, LightGBM's) that the calling thread starts at ``threads``.

    OpenMP's thread count is a per-thread setting: capped in the main thread, it still leaves a
    pool worker's steps on every core. A pool's ``initializer`` calls this in each worker.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="openmp")
    torch = sys.modules.get("torch")  # only when the model already loaded it: this module imports nothing heavy
    if torch is not None:
        torch.set_num_threads(threads)


@contextmanager
def threads_per_block(blocks_in_flight: int) -> Iterator[int]:
    """Share the cores among ``blocks_in_flight`` blocks while the context is open (yields threads per block).

    Caps the BLAS pools (``threadpoolctl``: process-wide) and what :func:`block_threads` returns
    (LightGBM's prediction reads it); the threads that score blocks call :func:`limit_this_thread`
    with the value yielded. Everything is restored on exit.
    """
    global _limit
    from threadpoolctl import threadpool_limits

    threads = max(1, (os.cpu_count() or 1) // max(1, blocks_in_flight))
    torch = sys.modules.get("torch")
    before_torch = torch.get_num_threads() if torch is not None else None
    before = _limit
    _limit = threads
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield threads
    finally:
        _limit = before
        if torch is not None and before_torch is not None:
            torch.set_num_threads(before_torch)
