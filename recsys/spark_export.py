"""Batch top-k export on Apache Spark: ``recsys recommend --engine spark``.

``mlflow.pyfunc.spark_udf`` wants one output row per input row and fails with
``OUTPUT_EXCEEDS_INPUT_ROWS`` for a model that answers k rows per user, so the export uses
``DataFrame.mapInPandas``: the user ids become a Spark DataFrame range-partitioned into contiguous
runs of the local engine's blocks (``block_size`` users each, one partition per block); each Python
worker process loads the model once (cached in :data:`_MODELS`), reads the same histories and new
items as the single-machine export (:func:`recsys.export.prepare_bundle`), and yields
``bundle.recommend`` frames, one per block. Same blocks, same users scored together: the lists and
scores equal the local engine's with the same ``block_size``.

Output: the same single Parquet file as the local engine, not a folder of part files. Spark
writes its parts to a hidden folder beside ``out``; the driver then copies them, one at a time (so
memory is bounded by one partition's rows), into one file with a row group per partition, checks
every user's row count exactly as the local export does, and renames the file into place. Users
keep their input order. Any failure leaves no output file.

Every input (k, model URI, data folder, users file, new items) is checked on the driver before a
Spark job starts, so bad input is a clear :class:`~recsys.errors.RecsysError` and writes nothing.
The executors read ``data_dir``, ``new_items`` and the MLflow store by path: on a cluster they must
be on storage every executor can see.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import contract as C
from recsys.errors import RecsysError
from recsys.export import ExportConfig, ExportSummary, assemble_parts, export_lock, load_export_inputs, prepare_bundle

__all__ = ["spark_recommend_to_file", "spark_session", "OUTPUT_SCHEMA"]

logger = logging.getLogger(__name__)

OUTPUT_SCHEMA = f"{C.USER_ID} string, {C.ITEM_ID} string, score double, rank long, fallback boolean"
"""The rows ``mapInPandas`` yields (the Spark form of :data:`recsys.bundle.RESULT_SCHEMA`)."""

_POS = "_pos"
_BLOCK = "_block"

_MODELS: dict[tuple, object] = {}
"""Per Python worker process: the prepared bundle of the last export, keyed by what it was built from."""


@contextmanager
def _quiet() -> Iterator[None]:
    """pyspark warns on every pandas conversion that it does not fully support pandas 3; the export's
    own checks (row counts here, equality with the local engine in the tests) stand, so not here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        yield


def spark_session(tracking_uri: str | None = None, *, show_progress: bool = True):
    """The active SparkSession, or a new quiet ``local[2]`` one; returns ``(session, created)``.

    Before a new session starts, sets (when not already set) ``SPARK_LOCAL_IP=127.0.0.1``,
    ``PYSPARK_PYTHON`` and ``PYSPARK_DRIVER_PYTHON`` (this interpreter), ``HF_HUB_OFFLINE=1`` and
    ``MLFLOW_TRACKING_URI`` (so executors can resolve ``models:/`` URIs).
    """
    from pyspark.sql import SparkSession

    defaults = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                "PYSPARK_DRIVER_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    if tracking_uri:
        defaults["MLFLOW_TRACKING_URI"] = tracking_uri
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if logging.getLogger("py4j").level == logging.NOTSET:
        logging.getLogger("py4j").setLevel(logging.WARNING)  # no "Closing down clientserver connection" at exit
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = (SparkSession.builder.master("local[2]").appName("recsys-recommend")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", str(bool(show_progress)).lower())
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.executorEnv.HF_HUB_OFFLINE", os.environ["HF_HUB_OFFLINE"]))
    if os.environ.get("MLFLOW_TRACKING_URI"):
        builder = builder.config("spark.executorEnv.MLFLOW_TRACKING_URI", os.environ["MLFLOW_TRACKING_URI"])
    with _quiet():
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session, True


def _stamp(data_dir: Path, new_items: Path | None) -> tuple:
    """Size and modification time of the input files: a long-lived worker reloads when they change."""
    from recsys.io import DatasetPaths

    found = DatasetPaths.from_dir(data_dir)
    files = [found.items, found.interactions, found.users, new_items]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f is not None and f.exists())


def _worker_bundle(model_uri: str, data_dir: str, new_items: str | None, tracking_uri: str | None, stamp: tuple):
    """The prepared bundle, loaded once per Python worker process (only the latest export is kept)."""
    key = (model_uri, data_dir, new_items, tracking_uri, stamp)
    bundle = _MODELS.get(key)
    if bundle is None:
        from recsys.pyfunc_model import load_registered

        _MODELS.clear()
        bundle, _ = prepare_bundle(load_registered(model_uri, tracking_uri), Path(data_dir),
                                   Path(new_items) if new_items else None)
        _MODELS[key] = bundle
    return bundle


def _recommend_partitions(model_uri: str, data_dir: str, new_items: str | None, tracking_uri: str | None,
                          stamp: tuple, config: ExportConfig):
    """The ``mapInPandas`` function: user ids in, k rows per user out, scored block by block.

    Rows arrive sorted by input position, tagged with their block (``position // block_size``).
    Arrow batches need not end at a block's end, so the tail of a batch waits for the next one:
    every block is scored whole, with exactly the users the local engine scores together. (The
    towers' float32 scores move in the last bits with the batch a user is scored in, and that can
    tip a ranker threshold; equal blocks give equal lists and scores.)
    """

    def recommend(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = None
        pending: list[pd.DataFrame] = []

        def score(rows: pd.DataFrame) -> pd.DataFrame:
            nonlocal bundle
            if bundle is None:
                bundle = config.applied(_worker_bundle(model_uri, data_dir, new_items, tracking_uri, stamp))
            users = rows.sort_values(_POS)[C.USER_ID].to_numpy(dtype=object)
            return bundle.recommend(users, config.k, exclude_seen=config.exclude_seen,
                                    block_size=config.block_size).to_pandas()

        for batch in batches:
            if batch.empty:
                continue
            blocks = batch[_BLOCK].to_numpy()
            for block in np.unique(blocks):
                rows = batch[blocks == block]
                if pending and pending[0][_BLOCK].iat[0] != block:
                    yield score(pd.concat(pending))
                    pending = []
                pending.append(rows)
        if pending:
            yield score(pd.concat(pending))

    return recommend


def _reason(exc: Exception) -> str:
    """The line that says why a Spark job failed (the executor's Python error), not the JVM stack trace."""
    text = str(exc)
    found = re.findall(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$", text, flags=re.MULTILINE)
    found = [(kind, message) for kind, message in found if not kind.endswith(("Py4JJavaError", "SparkException"))]
    if found:
        return f"{found[-1][0]}: {found[-1][1][:300]}"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)[:300]


def _partition_files(folder: Path) -> list[Path]:
    """Spark's part files in partition order (``part-00003-<uuid>-c000.snappy.parquet``)."""
    def key(path: Path) -> tuple[int, str]:
        found = re.match(r"part-(\d+)", path.name)
        return (int(found.group(1)) if found else sys.maxsize, path.name)

    return sorted(folder.glob("part-*.parquet"), key=key)


def spark_recommend_to_file(model_uri: str, data_dir: Path, out: Path, config: ExportConfig = ExportConfig(), *,
                            users_file: Path | None = None, new_items: Path | None = None,
                            tracking_uri: str | None = None, show_progress: bool = True) -> ExportSummary:
    """``recsys recommend --engine spark``: the local export's output, computed with ``mapInPandas``.

    Args:
        model_uri: ``models:/NAME@ALIAS`` (pinned to its version on the driver), ``models:/NAME/VERSION``, ...
        data_dir: whose users get lists, and the histories they are built from (read by every executor).
        out: one Parquet file (``user_id, item_id, score, rank, fallback``), like the local engine's; it
            appears only when complete and every user's row count is checked. Not a folder of part files.
        config: k, users per block and partition (``block_size``), whether seen items are excluded.
        users_file: only these users (a table with ``user_id`` or one id per line), in its order.
        new_items: items that arrived after training, encoded on each executor.
        tracking_uri: the MLflow store; also given to the executors.
        show_progress: Spark's console progress bar (only for a session this call starts).

    Uses the active SparkSession, or starts (and at the end stops) a ``local[2]`` one; see
    :func:`spark_session`. The summary's ``blocks`` are the Spark partitions.
    """
    start = time.perf_counter()
    out, data_dir = Path(out), Path(data_dir)
    found = load_export_inputs(model_uri, data_dir, out, users_file=users_file, new_items=new_items,
                               tracking_uri=tracking_uri)
    if len(found.users) == 0:
        raise RecsysError("no users to export")
    stamp = _stamp(data_dir, new_items)

    with export_lock(out), _quiet():
        return _run(found.bundle, found.users, found.model, stamp, data_dir, new_items, out, config, tracking_uri,
                    show_progress, start)


def _run(bundle, users: np.ndarray, pinned: str, stamp: tuple, data_dir: Path, new_items: Path | None, out: Path,
         config: ExportConfig, tracking_uri: str | None, show_progress: bool, start: float) -> ExportSummary:
    """The Spark job, the part files' assembly into ``out`` and the row-count check."""
    n_parts = math.ceil(len(users) / config.block_size)
    spark, created = spark_session(tracking_uri, show_progress=show_progress)
    logger.info("spark: %d users in %d partitions of up to %d, model %s", len(users), n_parts, config.block_size,
                pinned)
    parts = out.parent / f".{out.name}.spark-parts"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(parts, ignore_errors=True)
        position = np.arange(len(users), dtype=np.int64)
        ids = pd.DataFrame({_POS: position, _BLOCK: position // config.block_size, C.USER_ID: users.astype(str)})
        frame = spark.createDataFrame(ids, schema=f"{_POS} long, {_BLOCK} long, {C.USER_ID} string")
        # Contiguous ranges of whole blocks, each sorted: partition i's part file holds users in input order.
        frame = frame.repartitionByRange(n_parts, _BLOCK).sortWithinPartitions(_POS)
        function = _recommend_partitions(pinned, str(data_dir.resolve()),
                                         str(Path(new_items).resolve()) if new_items else None,
                                         tracking_uri, stamp, config)
        try:
            frame.mapInPandas(function, schema=OUTPUT_SCHEMA).write.mode("overwrite").parquet(str(parts.resolve()))
        except Exception as exc:  # a failed Spark job: PythonException, Py4JJavaError, ... (all say why in text)
            raise RecsysError(f"the Spark export failed: {_reason(exc)}; nothing written") from exc
        files = _partition_files(parts)
        for block, file in enumerate(files):
            file.rename(parts / f"part-{block:06d}.parquet")
        rows, fallback_users, short_users = assemble_parts(bundle, users, parts, len(files), out, config)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
        if created:
            spark.stop()
    return ExportSummary(out, len(users), rows, fallback_users, short_users, n_parts, 0, time.perf_counter() - start)
