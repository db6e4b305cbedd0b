"""``mlflow models serve`` of the registered champion: the REST answers equal the in-process model's.

One server (``--env-manager local``, loopback, a free port) is started for the module and
killed with its whole process group afterwards. MLflow wraps the model's rows as
``{"predictions": [{column: value, ...}, ...]}``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import requests

from recsys.pyfunc_model import SIGNATURE

STARTUP_S = 180
OUTPUT_COLUMNS = SIGNATURE.outputs.required_input_names()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (mlflow -> uvicorn), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class Server:
    def __init__(self, url: str, log: Path, startup_s: float) -> None:
        self.url = url
        self.log = log
        self.startup_s = startup_s

    def invoke(self, records: list[dict]) -> requests.Response:
        return requests.post(f"{self.url}/invocations", json={"dataframe_records": records}, timeout=60)

    def predict(self, records: list[dict]) -> pd.DataFrame:
        response = self.invoke(records)
        assert response.status_code == 200, response.text[:2000]
        body = response.json()
        assert set(body) == {"predictions"}, list(body)
        for row in body["predictions"]:
            assert list(row) == OUTPUT_COLUMNS, row
        return pd.DataFrame(body["predictions"], columns=OUTPUT_COLUMNS)


@pytest.fixture(scope="module")
def server(registered_model: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _, uri = registered_model
    scratch = tmp_path_factory.mktemp("serve")
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    # ``mlflow models serve`` execs ``uvicorn`` by name: the venv's bin must be on PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    log = scratch / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/recsys@champion",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=scratch, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - start > STARTUP_S:
                pytest.fail(f"mlflow models serve did not answer /ping in {STARTUP_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.25)
        yield Server(url, log, time.monotonic() - start)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def local_model(registered_model: tuple[Path, str]):
    import mlflow

    _, uri = registered_model
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.pyfunc.load_model("models:/recsys@champion")


@pytest.fixture(scope="module")
def users(registered_model: tuple[Path, str]) -> list[str]:
    """Three users with the most interactions: surely known to the model."""
    data, _ = registered_model
    counts = pl.read_parquet(data / "interactions.parquet").group_by("user_id").len().sort(["len", "user_id"],
                                                                                        descending=[True, False])
    return counts["user_id"].head(3).to_list()


def _assert_same(served: pd.DataFrame, local: pd.DataFrame) -> None:
    assert list(local.columns) == OUTPUT_COLUMNS
    assert len(served) == len(local)
    for column in ("user_id", "item_id", "rank", "fallback"):
        assert served[column].tolist() == local[column].tolist(), column
    np.testing.assert_allclose(served["score"].to_numpy(float), local["score"].to_numpy(float), rtol=1e-6, atol=1e-9)


def test_known_users_get_k_ranked_rows(server: Server, users: list[str]) -> None:
    out = server.predict([{"user_id": u, "k": 5} for u in users])
    assert out["user_id"].tolist() == [u for u in users for _ in range(5)]
    for _, group in out.groupby("user_id", sort=False):
        assert group["rank"].tolist() == [1, 2, 3, 4, 5]
        assert group["item_id"].is_unique
        assert not group["fallback"].any()
        assert group["score"].is_monotonic_decreasing


def test_unknown_user_gets_the_fallback(server: Server, users: list[str]) -> None:
    out = server.predict([{"user_id": "no-such-user-42", "k": 4}, {"user_id": users[0], "k": 4}])
    stranger = out[out["user_id"] == "no-such-user-42"]
    assert stranger["rank"].tolist() == [1, 2, 3, 4]
    assert stranger["fallback"].all()
    assert not out[out["user_id"] == users[0]]["fallback"].any()


def test_default_k_and_exclude_seen_false(server: Server, users: list[str], local_model) -> None:
    out = server.predict([{"user_id": users[0]}])
    assert out["rank"].tolist() == list(range(1, 11))  # the signature's default k = 10
    records = [{"user_id": u, "k": 6, "exclude_seen": False} for u in users]
    _assert_same(server.predict(records), local_model.predict(pd.DataFrame(records)))


def test_served_rows_equal_in_process_predict(server: Server, users: list[str], local_model) -> None:
    records = [{"user_id": u, "k": 5} for u in [*users, "no-such-user-42"]]
    served = server.predict(records)
    _assert_same(served, local_model.predict(pd.DataFrame(records)))


@pytest.mark.parametrize(("records", "expected"), [
    ([{"uid": "u0001", "k": 3}], "user_id"),
    ([{"user_id": "u0001", "k": 0}], "k must be between 1 and"),
])
def test_bad_request_is_an_error_and_the_server_keeps_answering(server: Server, users: list[str], records,
                                                                expected: str) -> None:
    response = server.invoke(records)
    assert response.status_code == 400, response.text[:500]
    body = response.json()
    # schema errors, and the model's own RecsysError (raised as INVALID_PARAMETER_VALUE), say what is wrong
    assert expected in body["message"]
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert len(server.predict([{"user_id": users[0], "k": 2}])) == 2
