"""Requests to the served model: every bad value is refused with its column, row and value, never a trace.

Driven through MLflow's own scoring entry point (``mlflow.pyfunc.scoring_server.invocations``:
JSON parsing, schema enforcement, the model), the path ``mlflow models serve`` takes for each
request; ``test_model_serving`` checks the same over HTTP.
"""

from __future__ import annotations

import json

import pandas as pd
import polars as pl
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import invocations


@pytest.fixture(scope="module")
def served(champion):
    data, _, model = champion
    users = pl.read_parquet(data / "interactions.parquet")["user_id"].unique().sort().head(3).to_list()
    return model, users


def _ask(model, records: list[dict]) -> list[dict]:
    """The answer's rows, or the MlflowException the server would turn into an error response."""
    answer = invocations(json.dumps({"dataframe_records": records}), "application/json", model,
                         model.metadata.get_input_schema())
    assert answer.status == 200
    return json.loads(answer.response)["predictions"]


def test_a_user_named_twice_gets_the_same_list_on_each_row(served):
    model, users = served
    rows = _ask(model, [{"user_id": users[0], "k": 3}, {"user_id": users[1], "k": 3}, {"user_id": users[0], "k": 3}])
    assert [r["user_id"] for r in rows] == [users[0]] * 3 + [users[1]] * 3 + [users[0]] * 3
    assert [r["item_id"] for r in rows[:3]] == [r["item_id"] for r in rows[6:]]
    once = _ask(model, [{"user_id": users[0], "k": 3}])
    assert [r["item_id"] for r in once] == [r["item_id"] for r in rows[:3]]
    explained = _ask(model, [{"user_id": users[0], "k": 2, "explain": True}] * 2)
    assert len(explained) == 4 and explained[0]["reason"] == explained[2]["reason"]


@pytest.mark.parametrize(("row", "expected"), [
    ({"user_id": None, "k": 2}, "user_id is null in row 0"),
    ({"k": 2, "exclude_seen": "false"}, "exclude_seen must be true or false (a JSON boolean); got 'false' in row 0"),
    ({"k": 2.5}, "k must be a whole number; got 2.5 in row 0"),
    ({"k": "5"}, "k must be a whole number; got '5'"),
    ({"k": True}, "k must be a whole number; got True"),
    ({"k": 2, "explain": 1}, "explain must be true or false"),
    ({"k": 0}, "k must be between 1 and"),
])
def test_bad_values_are_refused_with_the_column_row_and_value(served, row, expected):
    model, users = served
    with pytest.raises(MlflowException) as caught:
        _ask(model, [{"user_id": users[0]} | row])
    error = caught.value
    assert expected in error.message and error.get_http_status_code() == 400
    assert "stack_trace" not in error.serialize_as_json() and "Traceback" not in error.message


def test_whole_floats_and_missing_values_take_their_defaults(served):
    model, users = served
    rows = _ask(model, [{"user_id": users[0], "k": 2.0}, {"user_id": users[1]}, {"user_id": users[2], "k": None}])
    assert [sum(r["user_id"] == u for r in rows) for u in users] == [2, 10, 10]
    local = model.predict(pd.DataFrame({"user_id": [users[0]], "k": [4], "exclude_seen": [False]}))
    assert len(local) == 4  # in-process: pandas' own int64 and bool columns


def test_an_unforeseen_error_is_one_line_without_a_trace(served, monkeypatch):
    from recsys.bundle import ModelBundle

    model, users = served
    monkeypatch.setattr(ModelBundle, "recommend", lambda *a, **k: 1 / 0)
    with pytest.raises(MlflowException) as caught:
        _ask(model, [{"user_id": users[0], "k": 2}])
    error = caught.value
    assert "recsys could not score this request: ZeroDivisionError: division by zero" in error.message
    assert "stack_trace" not in error.serialize_as_json()
