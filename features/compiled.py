"""How the package's compiled loops are compiled (numba): once, cached on disk, without the GIL.

numba compiles a loop at its first call (a few seconds), cached on disk where the package folder or the
user's cache folder is writable. ``nogil``: two export threads run the loops on two cores at once.
"""

from __future__ import annotations

import numba

__all__ = ["jit"]


def jit(function=None, *, fastmath: bool = False):
    """``numba.njit`` without the GIL, cached on disk where a folder is writable (else compiled per process).

    ``@jit`` or ``@jit(fastmath=True)`` (sums may be reordered: vectorised, still one order per build).
    """
    if function is None:
        return lambda f: jit(f, fastmath=fastmath)
    try:
        return numba.njit(nogil=True, cache=True, fastmath=fastmath)(function)
    except RuntimeError:  # no writable cache location: compile in memory
        return numba.njit(nogil=True, fastmath=fastmath)(function)
