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
