"""The MIND impression protocol: rank only the items shown in each impression, then average.

Metrics follow the official MIND evaluation script (``evaluate.py`` of the MIND competition):
per impression, ``auc`` (``roc_auc_score``), ``mrr`` (``mrr_score``) and ``ndcg@5``/``ndcg@10``
(``ndcg_score`` with gains ``2^rel - 1``), then a plain mean over impressions.

The script orders items with an unstable ``np.argsort``, so its value on tied scores depends on the
numpy build. Here a tie is instead scored as the expectation over a uniformly random order of the
tied items (for AUC that is the usual Mann-Whitney half credit, i.e. average ranks). Without ties
the numbers equal the script's exactly; with ties they are deterministic and position-independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["impression_metrics"]


def impression_metrics(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                       *, ks: Sequence[int] = (5, 10)) -> dict[str, np.ndarray]:
    """Per-impression AUC, MRR and NDCG@k over the items shown in each impression.

    Within one impression with items sorted by descending score (rank ``r`` = 1, 2, ...),
    binary labels ``y_r`` and ``P = sum_r y_r`` clicks:

    * ``mrr = sum_r y_r / r / P`` (MIND's ``mrr_score``: the mean reciprocal rank of all clicks)
    * ``dcg@k = sum_{r<=k} (2^y_r - 1) / log2(r + 1)``; ``ndcg@k = dcg@k / ideal_dcg@k``, the ideal
      being the items ordered by label (MIND's ``dcg_score(y_true, y_true)``): ``min(k, P)`` clicks on top
    * ``auc = (sum of ascending average ranks of the clicks - P (P + 1) / 2) / (P * N)`` with ``N``
      non-clicks: ROC AUC, ties counting one half.

    Tied scores inside an impression contribute the expectation over a random order of the tie
    (see the module docstring). Edge cases: an impression without a click gets NaN for every metric;
    one without a non-click gets NaN AUC only (its MRR and NDCG are defined). Drop NaN with
    ``np.nanmean``.

    Args:
        scores: float ``[n_rows]`` model score of each shown item; finite.
        labels: ``[n_rows]`` 1 = clicked, 0 = shown and not clicked (bool or numbers in {0, 1}).
        groups: ``[n_rows]`` impression key of each row (ints or strings); rows of one impression
            need not be contiguous.
        ks: NDCG cut-offs, each an integer >= 1.

    Returns:
        ``{"group": keys [n_impressions] (sorted unique groups), "auc", "mrr", "ndcg@k" for k in ks}``,
        the metrics float64 ``[n_impressions]`` aligned with ``group``.

    Raises:
        ValueError: arrays are not 1-D of equal length, a score is not finite, a label is not 0/1,
            or a cut-off is not an integer >= 1.
    """
    scores, labels, groups = _check(scores, labels, groups, ks)
    keys, g = np.unique(groups, return_inverse=True)
    n_groups = keys.size
    size = np.bincount(g, minlength=n_groups)
    n_pos = np.bincount(g, weights=labels, minlength=n_groups)
    block_group, offset, width, pos = _tie_blocks(scores, labels, g, size)
    out: dict[str, np.ndarray] = {"group": keys}
    rank = np.arange(1, size.max(initial=0) + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["auc"] = _auc(block_group, offset, width, pos, size, n_pos)
        out["mrr"] = _expected_gain(1.0 / rank, block_group, offset, width, pos, n_groups) / n_pos
        for k in ks:
            discount = np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0)
            ideal = np.concatenate([[0.0], np.cumsum(discount)])[n_pos.astype(np.int64)]
            out[f"ndcg@{k}"] = _expected_gain(discount, block_group, offset, width, pos, n_groups) / ideal
    for name, values in out.items():
        if name != "group":
            values[n_pos == 0] = np.nan
    return out


def _check(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
           ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if scores.ndim != 1 or labels.shape != scores.shape or groups.shape != scores.shape:
        raise ValueError(f"scores, labels and groups must be 1-D arrays of equal length, got shapes "
                         f"{scores.shape}, {labels.shape} and {groups.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite; found NaN or inf (score unknown items with a low finite value)")
    labels = labels.astype(np.float64)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0 (not clicked) or 1 (clicked), got values {np.unique(labels)[:5]}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"every cut-off in ks must be an integer >= 1, got {k!r}")
    return scores, labels, groups


def _tie_blocks(scores: np.ndarray, labels: np.ndarray, g: np.ndarray,
                size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal score inside one impression, in descending-score order.

    Returns per block: its impression, the number of items ranked above it (0-based offset),
    its width, and its number of clicks.
    """
    # One int64 sort key (impression, dense descending-score rank) sorts ~2x faster than np.lexsort;
    # the order inside a tie is irrelevant because blocks are only summed.
    _, score_rank = np.unique(-scores, return_inverse=True)
    key = g.astype(np.int64) * (score_rank.max(initial=0) + 1) + score_rank
    order = np.argsort(key)
    key = key[order]
    g_s = g[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = key[1:] != key[:-1]
    first = np.flatnonzero(new)
    width = np.diff(np.append(first, order.size))
    pos = np.add.reduceat(labels[order], first) if first.size else np.zeros(0)
    block_group = g_s[first]
    start = np.cumsum(size) - size
    return block_group, first - start[block_group], width, pos


def _expected_gain(gain: np.ndarray, block_group: np.ndarray, offset: np.ndarray, width: np.ndarray,
                   pos: np.ndarray, n_groups: int) -> np.ndarray:
    """Per impression ``E[sum_r y_r gain_r]`` over random orders of tied items.

    A block of ``w`` tied items at ranks ``o+1 .. o+w`` holding ``p`` clicks contributes
    ``p * mean(gain[o : o+w])``, computed from the cumulative sum of ``gain``.
    """
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    block = pos * (cum[offset + width] - cum[offset]) / width
    return np.bincount(block_group, weights=block, minlength=n_groups)


def _auc(block_group: np.ndarray, offset: np.ndarray, width: np.ndarray, pos: np.ndarray,
         size: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC from average ranks; NaN without a click or without a non-click."""
    ascending_rank = size[block_group] - offset - (width - 1) / 2.0  # average over the tie
    rank_sum = np.bincount(block_group, weights=pos * ascending_rank, minlength=size.size)
    n_neg = size - n_pos
    auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc
