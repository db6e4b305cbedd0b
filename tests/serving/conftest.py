"""The registered champion as a loaded pyfunc, shared by the serving tests that score in-process."""

from __future__ import annotations

import mlflow
import pytest

CHAMPION = "models:/recsys@champion"


@pytest.fixture(scope="session")
def champion(registered_model):
    """``(data folder, tracking URI, the champion loaded by mlflow.pyfunc)``; the registry URIs are set."""
    data, uri = registered_model
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return data, uri, mlflow.pyfunc.load_model(CHAMPION)
