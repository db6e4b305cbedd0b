"""``recsys train``, ``registry`` and ``recommend`` against a real tracking server (``mlflow server`` on loopback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import requests
from click.testing import CliRunner
from tiny_train import tiny_train_args
from trend_data import write_trend_data

from recsys.cli import cli


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, root
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def _train(data: Path, url: str, bert: Path):
    return CliRunner().invoke(cli, tiny_train_args(data, url, bert))


def test_train_register_gate_and_export_through_a_tracking_server(server, tiny_bert_dir, tmp_path):
    url, root = server
    data = write_trend_data(tmp_path / "data", seed=1)
    first = _train(data, url, tiny_bert_dir)
    assert first.exit_code == 0, first.output
    assert "no champion yet; -> champion = version 1" in first.output
    second = _train(data, url, tiny_bert_dir)  # same data and seeds: the same model, so not better
    assert second.exit_code == 0, second.output
    assert "registered models:/recsys/2 (alias challenger)" in second.output
    assert "difference +0.0000" in second.output and "champion unchanged" in second.output
    listed = CliRunner().invoke(cli, ["registry", "--tracking-uri", url, "list"])
    assert "challenger=v2, champion=v1" in listed.output, listed.output
    assert any((root / "artifacts").rglob("bundle.json"))  # artifacts went through the server
    out = tmp_path / "recs.parquet"
    exported = CliRunner().invoke(cli, ["recommend", "--model", "models:/recsys@champion", "--tracking-uri", url,
                                        "--data", str(data), "--k", "5", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    users = pl.read_parquet(data / "interactions.parquet")["user_id"].n_unique()
    assert pl.read_parquet(out).height == 5 * users
