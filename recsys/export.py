"""Batch top-k export: every user's list from a registered model, streamed to one Parquet file.

Users are scored in blocks (candidates -> features -> ranker), so memory is bounded by the
block size, not by users x items. Each finished block is written as its own Parquet part
(temporary file, then rename) under a hidden ``.OUT.parts`` folder beside the output; at the
end the parts become the row groups of one file, which is renamed into place only after the
row counts check out. A killed run therefore leaves no output file, and ``resume`` skips the
blocks already written.

One export writes to an output at a time (an OS lock on ``.OUT.lock`` beside it, removed at the
end; a second run is refused at once), so two runs can never share the parts. The parts folder's manifest pins
what the blocks were made from: the model *version* an alias resolved to, the SHA-256 of the
data, users and new-item files, and the settings; ``resume`` reuses blocks only when all match.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from recsys import contract as C
from recsys.bundle import FALLBACK, RESULT_SCHEMA, ModelBundle
from recsys.console import bars
from recsys.errors import DataContractError, RecsysError
from recsys.io import read_table, write_parquet_atomic
from recsys.pipeline import ColdExposure
from recsys.threads import limit_this_thread, threads_per_block

__all__ = ["ExportConfig", "ExportSummary", "export_recommendations", "read_user_ids", "read_new_items",
           "prepare_bundle", "parts_folder", "check_users", "recommend_to_file", "assemble_parts",
           "load_export_inputs", "ExportInputs", "export_lock", "pin_model"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
COLD_PAGE = 20


@dataclass(frozen=True)
class ExportConfig:
    """How many items per user, how many users per block, and whether seen items are shown."""

    k: int = 100
    block_size: int = 512
    """Users scored together. Each block holds a few dense ``[block, n_items]`` score arrays: at 100k items two
    blocks of 512 in flight peaked at 5.4 GB against 6.9 GB for 1,024, at the same users/s."""
    exclude_seen: bool = True
    cold_slots: int | None = None
    """New-item slots at the end of each list's first page (20); None = the model's own setting."""
    workers: int = 2
    """Blocks scored at once (threads). A block alternates between single-threaded steps (feature joins, the
    sparse product, the selection's bookkeeping) and multi-threaded ones, so one block keeps 2 cores about 70%
    busy; a second block in flight fills the gaps, for a second block's memory (at 1M users / 100k items:
    284 users/s against 223 for one, the same 5.6 GB peak, set by the load). The lists do not depend on it."""

    def __post_init__(self) -> None:
        from recsys.topk import check_k

        check_k(self.k)
        if self.block_size < 1:
            raise RecsysError(f"block size must be >= 1; got {self.block_size}")
        if self.workers < 1:
            raise RecsysError(f"workers must be >= 1; got {self.workers}")
        if self.cold_slots is not None and not 0 <= self.cold_slots <= COLD_PAGE:
            raise RecsysError(f"cold slots must be between 0 and {COLD_PAGE}; got {self.cold_slots}")

    def applied(self, bundle: ModelBundle) -> ModelBundle:
        """``bundle`` with this export's cold-exposure setting."""
        if self.cold_slots is None:
            return bundle
        return bundle.with_cold(ColdExposure(self.cold_slots, COLD_PAGE, "end"))


@dataclass(frozen=True)
class ExportSummary:
    """What was written, and the row-count check."""

    out: Path
    users: int
    rows: int
    fallback_users: int
    """Users the model does not know (popularity lists)."""
    short_users: int
    """Users with fewer than k rows: fewer unseen items left in the catalogue than k."""
    blocks: int
    resumed_blocks: int
    seconds: float
    first_block_s: float | None = None
    """Seconds of the first block this run scored, alone: it also builds the indexes every later block reads."""
    later_users: int = 0
    """Users scored in the blocks after it."""
    later_s: float = 0.0
    """Seconds from the end of the first block to the end of the last: the rate of an export that goes on."""

    @property
    def users_per_s(self) -> float:
        return self.users / max(self.seconds, 1e-9)

    @property
    def steady_users_per_s(self) -> float | None:
        """Users/s after the first block (None without a later block): a longer export's rate."""
        return self.later_users / self.later_s if self.later_users and self.later_s > 0 else None

    def render(self) -> str:
        steady = (f"; {self.steady_users_per_s:,.0f} users/s after a first block of {self.first_block_s:.1f}s"
                  if self.steady_users_per_s is not None else "")
        return (f"wrote {self.out}: {self.rows:,} rows for {self.users:,} users in {self.seconds:.1f}s "
                f"({self.users_per_s:,.0f} users/s{steady}; {self.blocks} blocks, {self.resumed_blocks} resumed); "
                f"{self.fallback_users:,} unknown users got the popularity fallback; "
                f"{self.short_users:,} users have fewer than k unseen items left")


@contextmanager
def export_lock(out: Path) -> Iterator[None]:
    """Hold a lock on ``out`` for an export; a second export to the same file fails at once.

    Two runs writing one output would share its parts folder and temporary file: one could
    publish a file mixing both models' lists, or a torn one. The lock is an OS lock (``flock``) on
    ``.OUT.lock`` beside ``out``, so a killed run's lock is released with its process; the file is
    removed while still held, and a run that locked a file someone removed meanwhile counts as
    refused, so two runs never both hold it. Under the lock, temporaries a killed run left beside
    ``out`` are removed.
    """
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            held = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            held = False
    except BlockingIOError:
        held = False
    if not held:
        os.close(handle)
        raise RecsysError(f"another export is writing {out} now (lock {path}); wait for it to finish "
                          "or choose another --out")
    try:
        for stale in out.parent.glob(f".{glob.escape(out.name)}.*tmp"):  # a killed run's unfinished file
            stale.unlink(missing_ok=True)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)


def pin_model(model_uri: str, tracking_uri: str | None = None) -> str:
    """``models:/NAME@ALIAS`` as ``models:/NAME/VERSION``: what an alias pointed at when the export began.

    An alias can move during a long export (or between a killed run and its ``--resume``); every
    block, executor and manifest then names the version, never the alias. Other URIs are returned as given.
    """
    from recsys.registry import parse_model_uri, resolve_version

    found = parse_model_uri(model_uri)
    if found is None or found[1].isdigit():  # not a registry name, or already a version
        return model_uri
    return f"models:/{found[0]}/{resolve_version(*found, tracking_uri).version}"


def parts_folder(out: Path) -> Path:
    """Where finished blocks wait until the output is assembled (hidden, beside it)."""
    return out.parent / f".{out.name}.parts"


def read_user_ids(path: Path) -> np.ndarray:
    """User ids from a table with a ``user_id`` column, or a text file with one id per line."""
    if path.suffix.lower() in (".txt", ".lst", ""):
        if not path.is_file():
            raise DataContractError(f"{path}: file not found; check the path")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataContractError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                    f"{exc.start}); save the --users file as UTF-8") from None
        ids = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        frame = read_table(path)
        if C.USER_ID not in frame.columns:
            raise DataContractError(f"{path}: needs a {C.USER_ID!r} column; found {', '.join(frame.columns)}")
        ids = frame[C.USER_ID].cast(pl.String).drop_nulls().to_list()
    if not ids:
        raise DataContractError(f"{path}: lists no user ids")
    return np.asarray(list(dict.fromkeys(ids)), dtype=object)


def read_new_items(path: Path) -> pl.DataFrame:
    """Items that arrived after training, checked against the data contract (errors name file, column, row)."""
    from recsys.validation import ValidationReport, check_items

    checked = check_items(read_table(path), file=str(path))
    if checked.frame is None:
        raise DataContractError(ValidationReport(checked.problems).render())
    return checked.frame


def prepare_bundle(bundle: ModelBundle, data_dir: Path, new_items: Path | None = None
                   ) -> tuple[ModelBundle, np.ndarray]:
    """The model with the new items encoded and the histories of ``data_dir``; and the users found there.

    Interactions with items neither the model nor ``new_items`` knows are skipped (counted in the log).
    """
    from recsys.io import DatasetPaths, load_dataset
    from recsys.validation import ContractPolicy

    if new_items is not None:
        items = read_new_items(new_items)
        bundle = bundle.with_new_items(items)
        logger.info("encoded %d new items from %s", items.height, new_items)
    dataset = load_dataset(DatasetPaths.from_dir(data_dir), ContractPolicy(drop_unknown_items=True))
    indexed, unknown_items, unknown_users = bundle.index(dataset.interactions)
    if unknown_items:
        logger.warning("%s: %d interactions name items the model does not know (not in its catalogue or "
                       "--new-items); they are skipped", data_dir, unknown_items)
    users = np.asarray(dataset.interactions[C.USER_ID].unique().sort().to_list(), dtype=object)
    del dataset  # the log as read (strings) is not needed past here: at 20M events it is gigabytes
    if unknown_users:
        logger.info("%s: users the model does not know get the popularity fallback (%d interactions)", data_dir,
                    unknown_users)
    return bundle.with_indexed(indexed), users


def _manifest(users: np.ndarray, config: ExportConfig, model: str, inputs: dict | None) -> dict:
    digest = hashlib.sha256("\n".join(map(str, users)).encode()).hexdigest()
    settings = {k: v for k, v in asdict(config).items() if k != "workers"}  # the lists do not depend on it
    return {"model": model, "users": len(users), "users_sha256": digest} | settings | (inputs or {})


def _shown(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _open_parts(out: Path, manifest: dict, resume: bool) -> Path:
    parts = parts_folder(out)
    found = parts / MANIFEST
    if parts.exists() and resume and found.is_file():
        previous = json.loads(found.read_text())
        if previous != manifest:
            changed = sorted(k for k in manifest.keys() | previous.keys() if previous.get(k) != manifest.get(k))
            what = "; ".join(f"{k}: {_shown(previous.get(k))} then, {_shown(manifest.get(k))} now" for k in changed)
            raise RecsysError(f"--resume: the unfinished export in {parts} was started from other inputs or settings "
                              f"({what}); rerun without --resume to start over")
        return parts
    if resume:
        logger.info("--resume: no unfinished export of %s; starting from the first block", out)
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    found.write_text(json.dumps(manifest, indent=2))
    return parts


def export_recommendations(bundle: ModelBundle, users: np.ndarray, out: Path, config: ExportConfig = ExportConfig(),
                           *, resume: bool = False, show_progress: bool = True, model: str = "",
                           inputs: dict | None = None) -> ExportSummary:
    """Write the top-k of every user in ``users`` to ``out`` (Parquet, one row group per block).

    Args:
        bundle: the model, with the histories it should read (:func:`prepare_bundle`).
        users: user ids, in output order.
        out: the Parquet file; appears only when complete and checked.
        resume: keep the blocks an earlier run with the same model, inputs and settings finished.
        model: the model URI (a pinned version: :func:`pin_model`), recorded so ``resume`` never mixes two models.
        inputs: what else the blocks were made from (:attr:`ExportInputs.pins`: file fingerprints).

    Raises:
        RecsysError: no users, another export is writing ``out``, or ``resume`` found other inputs.
    """
    out = Path(out)
    with export_lock(out):
        return _export(bundle, users, out, config, resume, show_progress, _manifest(np.asarray(users, dtype=object),
                                                                                    config, model, inputs))


def _export(bundle: ModelBundle, users: np.ndarray, out: Path, config: ExportConfig, resume: bool,
            show_progress: bool, manifest: dict) -> ExportSummary:
    start = time.perf_counter()
    users = np.asarray(users, dtype=object)
    if len(users) == 0:
        raise RecsysError("no users to export")
    parts = _open_parts(out, manifest, resume)
    bundle = config.applied(bundle)
    starts = range(0, len(users), config.block_size)

    def part(block: int) -> Path:
        return parts / f"part-{block:06d}.parquet"

    def size(block: int) -> int:
        return min(config.block_size, len(users) - starts[block])

    def write(block: int) -> int:
        chunk = users[starts[block]:starts[block] + config.block_size]
        frame = bundle.recommend(chunk, config.k, exclude_seen=config.exclude_seen, block_size=config.block_size)
        write_parquet_atomic(frame, part(block))
        return len(chunk)

    todo = [block for block in range(len(starts)) if not part(block).exists()]
    resumed = len(starts) - len(todo)
    with tqdm(total=len(users), unit="user", desc="recommend", disable=bars(show_progress), smoothing=0.1) as bar:
        bar.update(len(users) - sum(map(size, todo)))
        first_s, later_users = None, 0
        if todo:  # the first block alone: it builds the caches every later block reads (built once, not per thread)
            began = time.perf_counter()
            bar.update(write(todo[0]))
            first_s, later_users = time.perf_counter() - began, sum(map(size, todo[1:]))
        after_first = time.perf_counter()
        # at most ``workers`` blocks in flight, none queued (a failed block stops the export at once), sharing the cores
        with (threads_per_block(config.workers) as threads,
              ThreadPoolExecutor(config.workers, initializer=limit_this_thread, initargs=(threads,)) as pool):
            pending: deque[Future[int]] = deque()
            for block in todo[1:]:
                if len(pending) >= config.workers:
                    bar.update(pending.popleft().result())
                pending.append(pool.submit(write, block))
            while pending:
                bar.update(pending.popleft().result())
        later_s = time.perf_counter() - after_first
    rows, fallback_users, short_users = assemble_parts(bundle, users, parts, len(starts), out, config)
    shutil.rmtree(parts, ignore_errors=True)
    return ExportSummary(out, len(users), rows, fallback_users, short_users, len(starts), resumed,
                         time.perf_counter() - start, first_s, later_users, later_s)


def assemble_parts(bundle: ModelBundle, users: np.ndarray, parts: Path, n_blocks: int, out: Path,
              config: ExportConfig) -> tuple[int, int, int]:
    """Copy the parts into one file (a row group each), check every user's row count, rename into place."""
    expected = pl.DataFrame({C.USER_ID: users, "expected": bundle.expected_rows(users, config.k, config.exclude_seen)},
                            schema={C.USER_ID: pl.String, "expected": pl.Int64})
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")  # this run's alone
    os.close(handle)
    tmp = Path(name)
    schema = pl.DataFrame(schema=RESULT_SCHEMA).to_arrow().schema
    counts, rows, fallback = [], 0, 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for block in range(n_blocks):
                table = pq.read_table(parts / f"part-{block:06d}.parquet").cast(schema)
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                frame = pl.from_arrow(table)
                counts.append(frame.group_by(C.USER_ID).agg(pl.len().alias("rows"), pl.col(FALLBACK).any()))
                rows += table.num_rows
        got = pl.concat(counts) if counts else pl.DataFrame(schema={C.USER_ID: pl.String, "rows": pl.UInt32,
                                                                    FALLBACK: pl.Boolean})
        check = expected.join(got, on=C.USER_ID, how="left").with_columns(pl.col("rows").fill_null(0))
        wrong = check.filter(pl.col("rows") != pl.col("expected"))
        if wrong.height:
            raise RecsysError(f"row-count check failed for {wrong.height} users (e.g. "
                              + ", ".join(f"{r[C.USER_ID]}: {r['rows']} rows, expected {r['expected']}"
                                          for r in wrong.head(5).iter_rows(named=True)) + "); nothing written")
        fallback = int(check[FALLBACK].fill_null(False).sum())
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return rows, fallback, int((check["expected"] < config.k).sum())


def check_users(users: np.ndarray, known: np.ndarray, data_users: np.ndarray, path: Path) -> None:
    """Every listed user must be known to the model or have interactions in the data; else a clear error."""
    listed = pl.Series(C.USER_ID, users, dtype=pl.String)
    seen = pl.concat([pl.Series(C.USER_ID, known, dtype=pl.String), pl.Series(C.USER_ID, data_users, dtype=pl.String)])
    unknown = listed.filter(~listed.is_in(seen.implode()))
    if unknown.len():
        raise DataContractError(f"{path}: {unknown.len()} user ids are neither known to the model nor in the data "
                                f"(e.g. {', '.join(unknown.head(5).to_list())}); check the ids or the --data folder")


@dataclass(frozen=True)
class ExportInputs:
    """An export's checked inputs: the model (pinned to a version), its users, and what pins them."""

    bundle: ModelBundle
    """The model with the data's histories and new items (:func:`prepare_bundle`)."""
    users: np.ndarray
    """User ids, in output order."""
    model: str
    """The model URI as a version (:func:`pin_model`): what every block is scored by."""
    pins: dict = field(default_factory=dict)
    """SHA-256 of the data, users and new-item files, for the manifest ``--resume`` checks."""


def load_export_inputs(model_uri: str, data_dir: Path, out: Path, *, users_file: Path | None = None,
                       new_items: Path | None = None, tracking_uri: str | None = None) -> ExportInputs:
    """The checked inputs of an export (any engine): the model with the data's histories and new items, the users.

    Raises a :class:`RecsysError` naming the bad input (output path, users file, model URI, data,
    new items) before anything is scored or written.
    """
    from recsys.fingerprint import file_sha256
    from recsys.io import DatasetPaths
    from recsys.pyfunc_model import load_registered

    if out.exists() and out.is_dir():
        raise RecsysError(f"--out {out} is a folder; give a file name such as recs.parquet")
    listed = read_user_ids(users_file) if users_file is not None else None
    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    pinned = pin_model(model_uri, tracking_uri)
    bundle, data_users = prepare_bundle(load_registered(pinned, tracking_uri), data_dir, new_items)
    paths = DatasetPaths.from_dir(data_dir)
    files = {"items": paths.items, "interactions": paths.interactions, "users": paths.users,
             "users_file": users_file, "new_items": new_items}
    pins = {"model_requested": model_uri} | {f"{name}_sha256": file_sha256(path) if path is not None else None
                                             for name, path in files.items()}
    if listed is not None:
        check_users(listed, bundle.user_ids, data_users, users_file)
    return ExportInputs(bundle, listed if listed is not None else data_users, pinned, pins)


def recommend_to_file(model_uri: str, data_dir: Path, out: Path, config: ExportConfig = ExportConfig(), *,
                      users_file: Path | None = None, new_items: Path | None = None, resume: bool = False,
                      tracking_uri: str | None = None, show_progress: bool = True) -> ExportSummary:
    """``recsys recommend`` on one machine: load the model, read the data and the inputs, export.

    Every input is checked before the first block is scored, so bad input writes nothing.
    """
    found = load_export_inputs(model_uri, data_dir, out, users_file=users_file, new_items=new_items,
                               tracking_uri=tracking_uri)
    return export_recommendations(found.bundle, found.users, out, config, resume=resume, show_progress=show_progress,
                                  model=found.model, inputs=found.pins)
