"""A linear model's block of scores, ``user . items[j] + user_offset + item_offset[j]``, never made dense.

LightFM, the text tower and the history-centroid cosine score a user by one product with every item vector.
The candidates ask three things of a model's block: each user's top items (a source), each row's mean and
spread over the catalogue, and the scores at the candidates (the z-score features). The dense ``[b, n_items]``
float32 product answers all three but costs the most of a block at 100k items (0.32 s of a 1.5 s block for the
text tower on one core, and its selection 0.06 s more). Here:

- the moments are exact from the items' mean and mean outer product (:mod:`recsys.scorers.moments`);
- the scores at pairs are float32 dot products (:func:`recsys.scorers.product_kernels.pair_dots`);
- the top items come from a **screen**: a bfloat16 product of the block with the catalogue a tile at a
  time (AMX, about 4x the float32 product's speed), each row keeping its best ``m`` on a heap, which are then
  rescored exactly. A bound on the screen's error (:class:`Screen`) proves, row by row, that no item outside
  the ``m`` can reach the row's ``k``-th exact score; so the selection is the exact top ``k`` of the float32
  scores (ties to the lower item), the same as ``recsys.topk.top_k`` of :meth:`FactorScores.at` at every
  item. A row the bound cannot settle is screened again with a wider heap, and at last from its dense row.
"""

from __future__ import annotations

from functools import cached_property
from statistics import NormalDist

import numpy as np
import scipy.sparse as sp
import torch

from recsys.scorers.moments import item_moments, linear_moments
from recsys.topk import _checked, _entries, top_k

__all__ = ["ItemSide", "FactorScores", "BoostedFactorScores", "Screen"]

SCREEN_MIN_ITEMS = 20_000
"""Catalogues smaller than this select from the dense block (there the float32 product is a few
milliseconds and a screen gains nothing); a test lowers it to drive small catalogues through the screen."""


def _native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 itself (AMX or AVX512-BF16); elsewhere the screen's product is
    emulated and no quicker than the float32 one, so the dense block selects."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without the probes
        return False


SCREEN_NATIVE = _native_bfloat16()
"""Whether :meth:`FactorScores.top_k` screens at all (a test sets it to drive the screen on any CPU)."""
SCREEN_ROUNDS = ((2, 2.0), (8, 2.0), (8, None))
"""Heap sizes tried, in multiples of ``k`` (+ :data:`SCREEN_SLACK`), each with the share of the heap that the
round's first floor would leave above it were the row's scores normal (None: no floor); later blocks start from
the floor the model's earlier blocks reached (:meth:`ItemSide.learn_floor`). A floor guessed too high (scores
with a lighter tail) only fails the row's proof; the last round has none."""
FLOOR_QUANTILE = 0.02
"""Share of a block's rows whose heap a learned floor may leave short (they go to the next round)."""
SCREEN_SLACK = 32
TILE = 4096
"""Items per tile of the screen: a 512-row tile of bfloat16 products is 4 MB and stays in the CPU's cache."""
_BUILD_ROWS = 8192
_UNIT = 2.0 ** -24
"""float32's unit roundoff: the accumulation terms of the bound."""


class Screen:
    """The catalogue's side of a linear score in bfloat16, with what bounds the screen's error.

    The screen multiplies ``x' = [user, user_offset, 1, -tau]`` by ``a' = [items, 1, item_offset, 1]`` in
    bfloat16 with float32 accumulation (``tau``: a guess at the row's ``k``-th score, so the products that
    decide the selection are near 0, where the output's rounding is finest). For an item ``j`` the screen
    dropped, its product rounds to at most the heap's lowest key, so before rounding it is below the next
    bfloat16 up (rounding is monotone), and its exact score is below that plus ``tau`` plus the error of the
    inputs' rounding, bounded per column group ``g`` (the item vector, each offset column) by Cauchy-Schwarz:
    ``|x^ . a^ - x . a| <= sum_g |x^_g| max_j |da_jg| + |dx_g| max_j |a_jg|``, plus float32 accumulation
    terms for the screen's and the exact sums.
    """

    def __init__(self, side: ItemSide) -> None:
        n, width = side.n_items, side.width
        d = side.items.shape[1]
        self.groups = [slice(0, d), *(slice(c, c + 1) for c in range(d, width + 1))]
        """Column groups of ``a'``: the item vector, then each offset column and the ``tau`` column."""
        self.items = torch.empty((n, width + 1), dtype=torch.bfloat16)
        """bfloat16 [n_items, K] ``a'`` (contiguous rows: a tile is a slice)."""
        self.item_error = np.zeros(len(self.groups))
        """Largest norm over items of each column group's rounding error."""
        self.item_size = np.zeros(len(self.groups))
        """Largest norm over items of each column group."""
        self.rounded_size = 0.0
        """Largest norm of a rounded item row (the screen's own accumulation error)."""
        for lo in range(0, n, _BUILD_ROWS):  # float64 copies of a few thousand rows at a time, not of the catalogue
            rows = slice(lo, min(lo + _BUILD_ROWS, n))
            exact = np.hstack([side.augmented(rows), np.ones((rows.stop - lo, 1), np.float32)])
            self.items[rows] = torch.from_numpy(exact).bfloat16()
            rounded = self.items[rows].double().numpy()
            error = rounded - exact
            for g, columns in enumerate(self.groups):
                self.item_error[g] = max(self.item_error[g], _row_norms(error[:, columns]).max())
                self.item_size[g] = max(self.item_size[g], _row_norms(exact[:, columns]).max())
            self.rounded_size = max(self.rounded_size, float(_row_norms(rounded).max()))

    def bound(self, user: np.ndarray, rounded: np.ndarray) -> np.ndarray:
        """float64 [r]: how far above the screen's product (float64 ``user`` ``x'`` and its bfloat16 ``rounded``)
        any exact float32 score of the row can be."""
        inputs = sum(_row_norms(rounded[:, g]) * e + _row_norms(rounded[:, g] - user[:, g]) * s
                     for g, e, s in zip(self.groups, self.item_error, self.item_size, strict=True))
        width = self.items.shape[1] + 2
        gamma = width * _UNIT / (1 - width * _UNIT)
        exact_sum = _row_norms(user[:, :-1]) * float(np.linalg.norm(self.item_size[:-1]))
        accumulation = gamma * (_row_norms(rounded) * self.rounded_size + exact_sum)
        return (inputs + accumulation) * (1 + 1e-6) + 1e-30

    def candidates(self, user: np.ndarray, m: int, exclude: sp.csr_matrix, floor: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's best ``m`` non-excluded items by the screen, and how high a dropped item's score can be.

        Args:
            user: float32 [r, K] ``x'`` (its last column ``-tau``).
            exclude: [r, n_items] CSR of the excluded items (sorted, distinct, nonzero).
            floor: float64 [r]: products below it are dropped without a heap (a guess at the row's ``m``-th
                product: a higher one only makes the row's proof fail); None: none.

        Returns:
            items int64 [r, m] (-1 where a row kept fewer); the float64 [r] value that no dropped item's exact
            score reaches (``-inf`` where nothing was dropped but exclusions); and the ``m``-th product in the
            scores' own units (``-inf`` where the heap is not full): where the next block's floor could be.
        """
        from recsys.scorers.product_kernels import screen_tile

        rows = len(user)
        keys = np.empty((rows, m), np.int32)
        items = np.full((rows, m), -1, np.int64)
        sizes = np.zeros(rows, np.int64)
        floor_keys = np.full(rows, _LOWEST_KEY, np.int32) if floor is None else _key_at_most(floor)
        ex_ptr, ex_items = exclude.indptr.astype(np.int64), exclude.indices.astype(np.int64)
        ex_next = ex_ptr[:-1].copy()
        rounded = torch.from_numpy(user).bfloat16()
        with torch.inference_mode():
            for first in range(0, len(self.items), TILE):
                tile = torch.mm(rounded, self.items[first:first + TILE].T)
                screen_tile(tile.view(torch.int16).numpy(), first, floor_keys, keys, items, sizes, ex_ptr, ex_items,
                            ex_next)
        # a dropped product rounded below the floor, or to at most the heap's lowest key once it was full:
        # before rounding it was below the next bfloat16 up from there (rounding is monotone)
        lowest = np.where(sizes == m, np.maximum(keys[:, 0], floor_keys - 1), floor_keys - 1)
        x = user.astype(np.float64)
        ceiling = _key_value(lowest + 1) - x[:, -1] + self.bound(x, rounded.double().numpy())
        mth = np.where(sizes == m, _key_value(keys[:, 0]) - x[:, -1], -np.inf)
        return items, np.where(lowest < _LOWEST_KEY, -np.inf, ceiling), mth


_LOWEST_KEY = -0x7F80
"""The order key of bfloat16 ``-inf``: a floor that drops nothing finite."""


def _flip(values: np.ndarray) -> np.ndarray:
    """bfloat16 bits (int16) <-> order keys (:func:`recsys.scorers.product_kernels.order_key`): its own inverse."""
    return np.where(values >= 0, values, -32768 - values)


def _key_at_most(values: np.ndarray) -> np.ndarray:
    """int32 order keys of the largest bfloat16 at most each float64 value."""
    rounded = torch.from_numpy(np.asarray(values, dtype=np.float32)).bfloat16()
    keys = _flip(rounded.view(torch.int16).numpy().astype(np.int32))
    return (keys - (rounded.double().numpy() > values)).astype(np.int32)


def _normal_quantile(share: float) -> float:
    """The standard normal's value with ``share`` of the mass above it (``share`` clipped to at most 1/2)."""
    return NormalDist().inv_cdf(1 - min(share, 0.5))


def _row_norms(matrix: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))


def _key_value(keys: np.ndarray) -> np.ndarray:
    """float64 values of :func:`recsys.scorers.product_kernels.order_key` keys (their bfloat16 numbers)."""
    bits = _flip(np.asarray(keys, dtype=np.int32)).astype(np.int16)
    return torch.from_numpy(bits).view(torch.bfloat16).double().numpy()


class ItemSide:
    """The catalogue's half of a linear score, kept by its model across blocks: the float32 item vectors and
    offsets, and what is built once from them (the moments, the screen)."""

    def __init__(self, items: np.ndarray, item_offset: np.ndarray | None = None, user_offset: bool = False) -> None:
        """``user_offset``: the score adds a per-user term (LightFM's user bias)."""
        self.items = np.ascontiguousarray(items, dtype=np.float32)
        self.item_offset = None if item_offset is None else np.ascontiguousarray(item_offset, dtype=np.float32)
        self.user_offset = user_offset
        self.floors: dict[int, float] = {}
        """Heap size -> the floor (a z-score of each row's scores) its screen starts from (:meth:`learn_floor`)."""

    @property
    def n_items(self) -> int:
        return len(self.items)

    def learn_floor(self, m: int, z: float, reached: np.ndarray) -> None:
        """Keep where a heap of ``m``'s floor should be, as a z-score of each row's scores: the
        :data:`FLOOR_QUANTILE` of the z-scores its ``m``-th products ``reached`` (-inf: a heap left short by a
        floor at ``z``, counted as one standard deviation lower). A floor only decides how quickly a block
        is screened, never what is selected; blocks that share the side race harmlessly."""
        seen = np.where(np.isfinite(reached), reached, z - 1.0)
        if len(seen):
            self.floors[m] = float(np.quantile(seen, FLOOR_QUANTILE))

    @property
    def width(self) -> int:
        """Columns of :meth:`augmented`."""
        return self.items.shape[1] + int(self.user_offset) + int(self.item_offset is not None)

    def augmented(self, rows: slice = slice(None)) -> np.ndarray:
        """float32 [n, d'] ``[items, 1 (with a user offset), item_offset (with one)]`` (``rows``: those items)."""
        items = self.items[rows]
        extra = ([np.ones((len(items), 1), np.float32)] if self.user_offset else []) + (
            [self.item_offset[rows, None]] if self.item_offset is not None else [])
        return np.hstack([items, *extra]) if extra else items

    def augment(self, user: np.ndarray, user_offset: np.ndarray | None) -> np.ndarray:
        """The user side matching :meth:`augmented`: ``[user, user_offset, 1]`` as the score has them."""
        b = len(user)
        extra = ([np.asarray(user_offset, np.float32)[:, None]] if self.user_offset else []) + (
            [np.ones((b, 1), np.float32)] if self.item_offset is not None else [])
        return np.hstack([user, *extra]).astype(np.float32, copy=False) if extra else user

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """The augmented side's mean and mean outer product (``recsys.scorers.moments.item_moments``)."""
        return item_moments(self.augmented())

    @cached_property
    def screen(self) -> Screen:
        """The bfloat16 side the top items are screened with (built at the first selection)."""
        return Screen(self)


class FactorScores:
    """A block's ``user . items[j] + user_offset + item_offset[j]``, read without the dense ``[b, n_items]`` block.

    Not for sharing between threads (it keeps the moments); its :class:`ItemSide` is shared.
    """

    def __init__(self, user: np.ndarray, side: ItemSide, user_offset: np.ndarray | None = None) -> None:
        self.user = np.ascontiguousarray(user, dtype=np.float32)
        self.side = side
        self.user_offset = user_offset
        if side.user_offset and user_offset is None:
            raise ValueError("this item side scores with a per-user offset: give user_offset")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user), self.side.n_items

    def dense(self, rows: np.ndarray | None = None, columns: np.ndarray | None = None) -> np.ndarray:
        """float32 [b, n_items]: every score (``rows``, ``columns``: only those block rows, those items)."""
        at = slice(None) if rows is None else np.asarray(rows)
        of = slice(None) if columns is None else np.asarray(columns)
        scores = self.user[at] @ self.side.items[of].T
        if self.side.user_offset:
            scores += np.asarray(self.user_offset, np.float32)[at][:, None]
        if self.side.item_offset is not None:
            scores += self.side.item_offset[of][None, :]
        return scores

    def at(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """float32 scores of the pairs ``(rows[m], items[m])``."""
        from recsys.scorers.product_kernels import pair_dots

        rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
        out = np.empty(len(rows), np.float32)
        pair_dots(self.user, self.side.items, rows, items, out)
        if self.side.user_offset:
            out += np.asarray(self.user_offset, np.float32)[rows]
        if self.side.item_offset is not None:
            out += self.side.item_offset[items]
        return out

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 mean and standard deviation of each row's scores over the whole catalogue (exact)."""
        return linear_moments(self.side.augment(self.user, self.user_offset), self.side.moments)

    def top_k(self, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """int64 [b, k]: each row's ``k`` best items by :meth:`at`'s scores, ties to the lower item, excluded items
        never, -1 padded (``recsys.topk.top_k``'s rules), through the screen on a large catalogue."""
        b, n = self.shape
        ex = sp.csr_matrix((b, n), dtype=np.float32) if exclude is None else _checked(exclude, self.shape)
        if n < SCREEN_MIN_ITEMS or b == 0 or not SCREEN_NATIVE:
            return top_k(self.dense(), k, exclude=ex)
        rows, cols = _entries(ex)
        ex = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=self.shape)  # sorted, distinct
        mean, std = self.moments
        tau = (mean + _normal_quantile(k / n) * std).astype(np.float32)
        user = np.hstack([self.side.augment(self.user, self.user_offset), -tau[:, None]])
        out = np.full((b, k), -1, np.int64)
        todo = np.arange(b)
        for width, share in SCREEN_ROUNDS:
            m = width * k + SCREEN_SLACK
            if m >= n or not len(todo):
                break
            z = None if share is None else self.side.floors.get(m, _normal_quantile(share * m / n))
            floor = None if z is None else mean[todo] + z * std[todo] - tau[todo]  # in the screen's units
            items, ceiling, mth = self.side.screen.candidates(user[todo], m, ex[todo], floor)
            if z is not None and len(todo) == b:
                self.side.learn_floor(m, z, (mth - mean) / np.where(std > 0, std, 1.0))
            picks, kth = self._best(todo, items, k)
            settled = (kth > ceiling) | (ceiling == -np.inf)
            out[todo[settled]] = picks[settled]
            todo = todo[~settled]
        if len(todo):
            out[todo] = top_k(self.dense(todo), k, exclude=ex[todo])
        return out

    def _best(self, rows: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's best ``k`` of its screened ``items`` (``m >= k`` a row; -1: none) by exact score, and the
        ``k``-th score (-inf where fewer than ``k``)."""
        valid = items >= 0
        exact = np.full(items.shape, -np.inf, np.float32)
        exact[valid] = self.at(np.broadcast_to(rows[:, None], items.shape)[valid], items[valid])
        order = np.lexsort((items, -exact), axis=-1)[:, :k]
        values = np.take_along_axis(exact, order, axis=1)
        picks = np.where(values > -np.inf, np.take_along_axis(items, order, axis=1), -1)
        return picks, values[:, k - 1].astype(np.float64)


class BoostedFactorScores(FactorScores):
    """:class:`FactorScores` plus a sparse non-negative term on some pairs (the text tower's neighbour term on the
    items near each user's history), still never made dense.

    Every read stays exact: the pairs add the term where it is; the moments add its row sums and, for the
    squares, twice its products with the linear scores at its entries plus its own squares; and the top items
    are the best of the linear top ``k`` and the boosted entries. That union holds the exact top ``k`` (ties to
    the lower item): an item outside both scores no more than each of the linear top ``k``, none of which a
    boost lowers, and where it ties one of them the linear selection already put that one first.
    """

    def __init__(self, user: np.ndarray, side: ItemSide, boost: sp.csr_matrix,
                 user_offset: np.ndarray | None = None) -> None:
        super().__init__(user, side, user_offset)
        if boost.shape != self.shape or (boost.nnz and boost.data.min() < 0):
            raise ValueError(f"the boost must be a non-negative [{self.shape[0]}, {self.shape[1]}] matrix, "
                             f"got shape {boost.shape}")
        self.boost = sp.csr_matrix(boost, dtype=np.float32)
        self.boost.sum_duplicates()

    def dense(self, rows: np.ndarray | None = None, columns: np.ndarray | None = None) -> np.ndarray:
        scores = super().dense(rows, columns)
        boost = self.boost if rows is None else self.boost[np.asarray(rows)]
        boost = boost if columns is None else boost[:, np.asarray(columns)]
        return scores + boost.toarray()

    def at(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
        return super().at(rows, items) + np.asarray(self.boost[rows, items], dtype=np.float32).ravel()

    @cached_property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        mean, std = FactorScores.moments.func(self)  # the linear scores' (the parent's cache is this one's)
        entries = self.boost.tocoo()
        n = max(self.shape[1], 1)
        linear = super().at(entries.row, entries.col).astype(np.float64)
        b = self.shape[0]
        added = np.bincount(entries.row, weights=entries.data.astype(np.float64), minlength=b) / n
        cross = np.bincount(entries.row, weights=(2.0 * linear + entries.data) * entries.data, minlength=b) / n
        new_mean = mean + added
        square = std**2 + mean**2 + cross
        return new_mean, np.sqrt(np.maximum(square - new_mean**2, 0.0))

    def top_k(self, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        linear = super().top_k(k, exclude)
        if not self.boost.nnz:
            return linear
        b = self.shape[0]
        rows, cols = np.nonzero(linear >= 0)
        rows, cols = [rows], [linear[rows, cols]]
        if exclude is not None:  # an excluded item stays out, boosted or not
            ex_rows, ex_cols = _entries(_checked(exclude, self.shape))
            rows, cols = rows + [ex_rows], cols + [ex_cols]
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        taken = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=self.shape)
        boosted = self.boost - self.boost.multiply(taken > 0)  # the boosted entries neither picked nor excluded
        boosted.eliminate_zeros()
        counts = np.diff(boosted.indptr)
        pool = np.full((b, k + int(counts.max(initial=0))), -1, np.int64)
        pool[:, :k] = linear
        at = np.repeat(np.arange(b), counts)
        pool[at, k + np.arange(len(at)) - np.repeat(boosted.indptr[:-1], counts)] = boosted.indices
        return self._best(np.arange(b), pool, k)[0]
