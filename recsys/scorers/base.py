"""What every stage-one scorer shares: the scoring contract, block checks, and array storage.

A scorer is the runtime half of a model: plain arrays and a little config, fitted elsewhere
(``training/fit_*.py``) and only scored here. It stores itself as data (one ``.npy`` per array
under ``arrays/``, numeric dtypes only; JSON settings), never as serialised Python objects, so
loading a registered model runs no code from the artifact store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from recsys.errors import RecsysError

__all__ = ["Scorer", "StoredScorer", "binarize", "check_block", "save_arrays", "load_arrays", "write_json",
           "read_json", "save_csr", "load_csr"]

ARRAYS = "arrays"
"""Folder of one ``.npy`` file per array: read straight into memory (a zip member would be CRC-checked and
copied in chunks, about 1.6x slower on a 360 MB matrix)."""


@runtime_checkable
class Scorer(Protocol):
    """A fitted model that scores a block of users against the whole catalogue."""

    name: str
    """Short lower-case name used in result tables and as the feature name (``score_<name>``)."""

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores of ``users`` for every item, higher is better.

        Args:
            users: int [b] user indices.
            history: float32 [b, n_items] the interactions the model may use for these users
                at scoring time (rows aligned with ``users``); the caller excludes them afterwards.

        Returns:
            float32 [b, n_items].
        """
        ...


class StoredScorer:
    """Mixin of scorers the registered model carries: ``save(folder)`` and ``load(folder, settings)``.

    ``KIND`` names the class in the stored settings; :func:`recsys.scorers.load_scorer` maps it back.
    """

    KIND: ClassVar[str]

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the arrays into ``folder``; returns the JSON settings that :meth:`load` reads back."""
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path, settings: dict[str, Any]) -> StoredScorer:
        raise NotImplementedError


def binarize(matrix: sp.spmatrix) -> sp.csr_matrix:
    """1.0 where an entry is positive, structurally absent elsewhere.

    Args:
        matrix: float [n_rows, n_cols] sparse weights; duplicates are summed first.

    Returns:
        float32 [n_rows, n_cols] csr with canonical indices and only 1.0 stored.
    """
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.sum_duplicates()
    out.data = (out.data > 0).astype(np.float32)
    out.eliminate_zeros()
    return out


def check_block(users: np.ndarray, history: sp.spmatrix, n_items: int, n_users: int | None = None) -> np.ndarray:
    """Validate one scoring block against the fitted catalogue.

    Args:
        users: int [b] user indices.
        history: [b, n_items] sparse interactions aligned with ``users``.
        n_items: number of items seen in ``fit``.
        n_users: number of users seen in ``fit``; when given, ``users`` must lie in
            ``[0, n_users)`` (models that look up per-user factors).

    Returns:
        int64 [b] copy of ``users``.

    Raises:
        ValueError: wrong dimensions, non-integer or out-of-range user indices.
    """
    users = np.asarray(users)
    if users.ndim != 1 or (users.size and not np.issubdtype(users.dtype, np.integer)):
        raise ValueError(f"users must be a 1-d integer array; got dtype {users.dtype} and shape {users.shape}")
    if history.shape != (users.shape[0], n_items):
        raise ValueError(
            f"history has shape {history.shape}; expected ({users.shape[0]}, {n_items}): "
            "one row per entry of `users` and one column per item of the catalogue given to fit()"
        )
    if n_users is not None and users.size and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(
            f"user indices must lie in [0, {n_users}) (the users seen in fit()); "
            f"got min {users.min()}, max {users.max()}"
        )
    return users.astype(np.int64)


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Numeric arrays as ``folder/arrays/<name>.npy`` (object arrays are refused)."""
    target = folder / ARRAYS
    target.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; store strings as Parquet, not in {ARRAYS}/")
        np.save(target / f"{name}.npy", array)


def load_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The arrays of :func:`save_arrays`, mapped from their files (copy-on-write), not read into memory.

    A page costs memory only once it is read, so what a use never reads stays on disk: at 1M users
    LightFM's training state (0.8 GB, read only by an update) and the stored histories an export
    replaces with its data's. Writes stay private to the process (the files never change). numpy's
    loader refuses an object array by default (it would run code).
    """
    source = folder / ARRAYS
    if not source.is_dir():
        raise RecsysError(f"{source}: missing; the model folder is incomplete")
    return {path.name.removesuffix(".npy"): _mapped(path) for path in sorted(source.glob("*.npy"))}


def _mapped(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, mmap_mode="c"))
    except ValueError as error:  # an object array (it would unpickle) or a damaged header
        raise RecsysError(f"{path}: not a plain numeric array ({error}); the model folder is damaged or was not "
                          "written by recsys") from error


def save_csr(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """The arrays of a csr matrix under ``prefix`` (for :func:`save_arrays`)."""
    matrix = sp.csr_matrix(matrix)
    return {f"{prefix}.data": matrix.data, f"{prefix}.indices": matrix.indices, f"{prefix}.indptr": matrix.indptr,
            f"{prefix}.shape": np.asarray(matrix.shape, dtype=np.int64)}


def load_csr(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    """The csr matrix :func:`save_csr` stored under ``prefix``."""
    return sp.csr_matrix((arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"]),
                         shape=tuple(int(n) for n in arrays[f"{prefix}.shape"]))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecsysError(f"{path}: missing; the model folder is incomplete")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecsysError(f"{path}: not valid JSON ({exc})") from exc
