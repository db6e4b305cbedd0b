"""What a killed run leaves (its temporary folder, runs left RUNNING) is cleaned or flagged by the next start."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from click.testing import CliRunner
from mlflow import MlflowClient

from recsys.cli import cli
from recsys.registry import RUN_TAG
from recsys.scratch import INTERRUPTED_TAG, mark_interrupted, owner_tags, process_alive, run_temp_folder


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert not process_alive(done.pid)
    return done.pid


def test_the_next_run_removes_a_killed_runs_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = tmp_path / f"recsys-{_dead_pid()}-abc"
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "checkpoints" / "last.ckpt").write_bytes(b"x" * 1000)
    living = tmp_path / f"recsys-{os.getpid()}-def"  # a run still going (this process): left alone
    living.mkdir()
    with run_temp_folder() as folder:
        assert tempfile.gettempdir() == str(folder) and folder.parent == tmp_path
        scratch = tempfile.mkdtemp()
        assert scratch.startswith(str(folder))
    assert not killed.exists() and living.exists() and not folder.exists()
    assert tempfile.gettempdir() == str(tmp_path)


def test_runs_left_running_by_a_dead_process_are_failed_and_their_version_flagged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    experiment = client.create_experiment("recsys-train", artifact_location=(tmp_path / "art").as_uri())
    dead = owner_tags() | {"recsys.pid": str(_dead_pid())}
    killed = client.create_run(experiment, tags=dead).info.run_id  # RUNNING, and its process is gone
    child = client.create_run(experiment, tags={"mlflow.parentRunId": killed}).info.run_id
    alive = client.create_run(experiment, tags=owner_tags()).info.run_id  # this process: still running
    elsewhere = client.create_run(experiment, tags=dead | {"recsys.host": "another-machine"}).info.run_id
    client.create_registered_model("m")
    client.create_model_version("m", str(tmp_path), run_id=killed, tags={RUN_TAG: killed})
    shown = CliRunner().invoke(cli, ["registry", "--tracking-uri", uri, "show", "m"])
    assert shown.exit_code == 0 and "interrupted: its run FAILED" in shown.output, shown.output
    assert client.get_run(killed).info.status == "FAILED"
    assert "killed" in client.get_run(killed).data.tags[INTERRUPTED_TAG]
    assert client.get_run(child).info.status == "FAILED"  # takes its parent's owner
    assert mark_interrupted(client, [experiment]) == []  # nothing left to mark
    assert client.get_run(alive).info.status == client.get_run(elsewhere).info.status == "RUNNING"
