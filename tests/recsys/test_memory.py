"""The process's peak memory reading and the allocator release the training stages call."""

from __future__ import annotations

import numpy as np

from recsys.memory import peak_rss_mb, release


def test_peak_rss_grows_with_an_allocation_and_release_keeps_it():
    before = peak_rss_mb()
    block = np.ones(60 * 2**20 // 8)  # 60 MB, touched
    assert block.sum() > 0
    after = peak_rss_mb()
    assert after >= before and after > 60
    del block
    release()  # frees pages; the peak is a high-water mark and stays
    assert peak_rss_mb() == after or peak_rss_mb() > after


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_frozen_heap_skips_what_was_alive_and_still_frees_cycles_made_inside():
    import gc
    import weakref

    from recsys.memory import frozen_heap

    alive = [_Node() for _ in range(100)]
    with frozen_heap():
        assert gc.get_freeze_count() >= len(alive)  # the objects alive on entry are out of the walk
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle made during the run: only the collector frees it
        ref = weakref.ref(a)
        del a, b
        release()
        assert ref() is None
    assert gc.get_freeze_count() == 0  # handed back: a later collection frees them again
    assert all(isinstance(n, _Node) for n in alive)
