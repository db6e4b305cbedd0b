"""What a killed run leaves behind, cleaned by the next one: its temporary folder, its runs left RUNNING.

``kill -9`` runs no ``finally``: temporary folders (checkpoints, the bundle staged for MLflow,
MLflow's own scratch) stay under the system temp folder, and the run MLflow was writing stays
RUNNING for ever. Each run therefore puts every temporary file under one folder named after its
process id, and tags its MLflow runs with that id and the host; a later start removes the
folders and fails the runs whose process is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["process_alive", "run_temp_folder", "owner_tags", "mark_interrupted", "PID_TAG", "HOST_TAG",
           "INTERRUPTED_TAG"]

logger = logging.getLogger(__name__)

PREFIX = "recsys-"
PID_TAG, HOST_TAG = "recsys.pid", "recsys.host"
"""Tags of a run: the process that wrote it, and the machine it ran on."""
INTERRUPTED_TAG = "recsys.interrupted"
"""Set on a run found RUNNING after its process ended: it was killed before it finished."""


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_temp_folder() -> Iterator[Path]:
    """Every temporary file of the block under one folder (``tempfile.tempdir``), removed at its end.

    Folders of earlier runs whose process is gone (killed) are removed first.
    """
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{PREFIX}*"):
        pid = old.name.removeprefix(PREFIX).split("-")[0]
        if old.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
            logger.info("removed %s, left by a run that was killed", old)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)


def owner_tags() -> dict[str, str]:
    """The tags that let a later start tell whether this run's process still lives."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def mark_interrupted(client, experiment_ids: list[str]) -> list[str]:
    """Fail the runs left RUNNING by a process of this machine that no longer exists; returns their ids.

    A run without the owner tags takes its parent's (child runs of a stage). Runs of other
    machines, or of a process still alive, are left alone.
    """
    if not experiment_ids:
        return []
    running = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000)
    host, marked = socket.gethostname(), []
    for run in running:
        tags = run.data.tags
        if PID_TAG not in tags and (parent := tags.get("mlflow.parentRunId")):
            tags = client.get_run(parent).data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        client.set_tag(run.info.run_id, INTERRUPTED_TAG, f"process {pid} ended before the run finished (killed)")
        client.set_terminated(run.info.run_id, status="FAILED")
        marked.append(run.info.run_id)
    if marked:
        logger.warning("marked %d run(s) FAILED: left RUNNING by a process that was killed (%s)", len(marked),
                       ", ".join(marked[:5]))
    return marked
