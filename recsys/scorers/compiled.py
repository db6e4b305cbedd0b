"""What the compiled loops of the scorers share: how they are compiled (:func:`features.compiled.jit`), and
the bounded heap they select with."""

from __future__ import annotations

from features.compiled import jit

__all__ = ["jit", "better", "offer"]


@jit
def better(value, item, than_value, than_item):  # pragma: no cover - compiled
    """Ranks before: a higher score, or the same score and the lower item index."""
    return value > than_value or (value == than_value and item < than_item)


@jit
def offer(values, items, size, k, value, item):  # pragma: no cover - compiled
    """Offer ``(value, item)`` to a heap of the best ``k`` seen so far (the worst at its root); returns its size."""
    if size < k:  # sift up from the end
        at = size
        size += 1
        while at > 0:
            parent = (at - 1) >> 1
            if better(values[parent], items[parent], value, item):
                values[at], items[at] = values[parent], items[parent]
                at = parent
            else:
                break
        values[at], items[at] = value, item
        return size
    if not better(value, item, values[0], items[0]):
        return size
    at = 0  # replace the worst and sift down
    while True:
        child = 2 * at + 1
        if child >= size:
            break
        if child + 1 < size and better(values[child], items[child], values[child + 1], items[child + 1]):
            child += 1  # the worse of the two children
        if better(value, item, values[child], items[child]):
            values[at], items[at] = values[child], items[child]
            at = child
        else:
            break
    values[at], items[at] = value, item
    return size
