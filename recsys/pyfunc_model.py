"""The whole pipeline as one MLflow pyfunc model with a signature.

Input rows: ``user_id`` (string), optional ``k`` (a whole number, default 10), ``exclude_seen``
(boolean, default true) and ``explain`` (boolean, default false). Output rows: ``user_id,
item_id, score, rank, fallback``, k per user, best first; ``fallback`` is true for users the
model does not know (they get the most popular items). When any row of a request asks for
``explain``, the output has one more column, ``reason`` (string, :mod:`recsys.explain`): the
explanation of each row of the users who asked, null for the others; without ``explain`` the
output has the five columns only (``reason`` is an optional output column of the signature).
A user named on several rows gets its list on each.

The optional columns are declared ``any`` in the signature, and the model checks them itself:
MLflow's JSON parsing casts a declared ``long`` 2.5 to 2 and a missing boolean to true before a
model sees them, and a string ``"false"`` reaches it as a truthy string. Here a wrong type, a
fraction or a null user id is refused with the column, the row and the value; nothing else.
Errors the model did not foresee are answered with their type and message, never a stack trace
(the trace goes to the server's log).
The same model answers ``mlflow models serve`` requests, batch export (``recsys recommend``)
and Spark (``recsys.spark_export``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import polars as pl
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

from recsys import contract as C
from recsys.bundle import FALLBACK, RESULT_SCHEMA, ModelBundle
from recsys.errors import RecsysError
from recsys.topk import DEFAULT_K, check_k

__all__ = ["RecsysModel", "SIGNATURE", "log_bundle", "load_bundle", "load_registered", "ARTIFACT", "EXPLAIN",
           "REASON"]

logger = logging.getLogger(__name__)

ARTIFACT = "bundle"
"""Name of the bundle folder among the pyfunc's artifacts."""
EXPLAIN = "explain"
"""Optional boolean input column: true asks for the row's ``reason``."""
REASON = "reason"
"""Optional output column: the explanation of a row (only when a request asks for ``explain``)."""

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", C.USER_ID), ColSpec(AnyType(), "k", required=False),
                   ColSpec(AnyType(), "exclude_seen", required=False), ColSpec(AnyType(), EXPLAIN, required=False)]),
    outputs=Schema([ColSpec("string", C.USER_ID), ColSpec("string", C.ITEM_ID), ColSpec("double", "score"),
                    ColSpec("long", "rank"), ColSpec("boolean", FALLBACK), ColSpec("string", REASON, required=False)]),
)
REQUIREMENTS = ("torch", "transformers", "safetensors", "tokenizers", "polars", "pyarrow", "numpy", "scipy",
                "lightgbm", "mlflow", "pandas", "tqdm", "threadpoolctl", "numba")
"""What loading and scoring import (the runtime): no peft, Lightning, LightFM or scikit-learn."""
CODE_FILE = Path(__file__).with_name("pyfunc_code.py")
"""The models-from-code file MLflow logs instead of a serialised ``PythonModel`` object."""


class RecsysModel(mlflow.pyfunc.PythonModel):
    """MLflow's face of a :class:`ModelBundle`: load it once, answer DataFrames of user ids."""

    bundle: ModelBundle | None = None

    def load_context(self, context) -> None:
        self.bundle = ModelBundle.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Top-k rows per input row's user (groups of equal ``k`` and ``exclude_seen`` scored together).

        Bad input raises ``MlflowException(INVALID_PARAMETER_VALUE)``, which the scoring server
        answers with HTTP 400 and this message (any other error would be a generic one).
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

        try:
            return self._predict(model_input)
        except RecsysError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as exc:  # not foreseen: the reason in the answer, the trace in the server's log only
            logger.exception("recsys predict failed")
            first = (str(exc).splitlines() or [""])[0][:300]
            raise MlflowException(f"recsys could not score this request: {type(exc).__name__}: {first}",
                                  error_code=INTERNAL_ERROR) from None

    def _predict(self, model_input: pd.DataFrame) -> pd.DataFrame:
        if self.bundle is None:
            raise RecsysError("the model is not loaded; load it with mlflow.pyfunc.load_model")
        frame = pd.DataFrame(model_input)
        if C.USER_ID not in frame.columns:
            raise RecsysError(f"input needs a {C.USER_ID!r} column; got {', '.join(map(str, frame.columns))}")
        ks = _whole_numbers(frame, "k", DEFAULT_K)
        exclude = _flags(frame, "exclude_seen", True)
        for k in np.unique(ks):
            check_k(k)
        asked = _flags(frame, EXPLAIN, False)
        users = _user_ids(frame)
        parts = []
        for k, ex in sorted({(int(a), bool(b)) for a, b in zip(ks, exclude, strict=True)}):
            rows = np.flatnonzero((ks == k) & (exclude == ex))
            out = self.bundle.recommend(users[rows], k, exclude_seen=ex, keep_row=True)
            out = out.with_columns(pl.Series("_row", rows[out["_row"].to_numpy()]))
            if asked.any():
                out = self._reasons(out, asked, ex)
            parts.append(out)
        schema = RESULT_SCHEMA | ({REASON: pl.String} if asked.any() else {})
        if not parts:
            return pl.DataFrame(schema=schema).to_pandas()
        out = pl.concat(parts).sort("_row", "rank").select(list(schema)).to_pandas()
        if REASON in out.columns:  # None, not NaN: the scoring server writes JSON null, not the non-standard NaN
            out[REASON] = out[REASON].astype(object).where(out[REASON].notna(), None)
        return out

    def _reasons(self, out: pl.DataFrame, asked: np.ndarray, exclude_seen: bool) -> pl.DataFrame:
        """``out`` with ``reason``: explained for the rows whose input row asked, null for the others."""
        from recsys.explain import explain_recommendations

        wanted = out.filter(pl.Series(asked[out["_row"].to_numpy()]))
        if wanted.height == 0:
            return out.with_columns(pl.lit(None, pl.String).alias(REASON))
        reasons = explain_recommendations(self.bundle, wanted, exclude_seen=exclude_seen).select("_row", "rank",
                                                                                                 REASON)
        return out.join(reasons, on=["_row", "rank"], how="left", maintain_order="left")


def _column(frame: pd.DataFrame, name: str, default) -> np.ndarray:
    """The column as objects, ``default`` where it is absent or null."""
    if name not in frame.columns:
        return np.full(len(frame), default, dtype=object)
    values = frame[name].astype(object)
    return values.where(values.notna(), default).to_numpy(dtype=object)


def _refuse(name: str, values: np.ndarray, bad: np.ndarray, want: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RecsysError(f"{name} must be {want}; got {values[row]!r} in row {row} "
                          f"({int(bad.sum())} row(s) like it)")


def _whole_numbers(frame: pd.DataFrame, name: str, default: int) -> np.ndarray:
    """A column of whole numbers (5 or 5.0; not 2.5, "5", true or inf)."""
    values = _column(frame, name, default)
    number = np.array([isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)
                       for v in values], dtype=bool)
    _refuse(name, values, ~number, "a whole number")
    as_float = values.astype(np.float64)
    _refuse(name, values, ~np.isfinite(as_float) | (as_float != np.floor(as_float)), "a whole number")
    return as_float.astype(np.int64)


def _flags(frame: pd.DataFrame, name: str, default: bool) -> np.ndarray:
    """A column of booleans (true or false; not "false", 0 or 1)."""
    values = _column(frame, name, default)
    _refuse(name, values, np.array([not isinstance(v, bool | np.bool_) for v in values], dtype=bool),
            "true or false (a JSON boolean)")
    return values.astype(bool)


def _user_ids(frame: pd.DataFrame) -> np.ndarray:
    """User ids as strings (numbers are read as their text); a null id is refused."""
    values = frame[C.USER_ID].astype(object)
    missing = values.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise RecsysError(f"{C.USER_ID} is null in row {row} ({int(missing.sum())} row(s) like it); "
                          "every row needs a user id")
    return values.astype(str).to_numpy(dtype=object)


def log_bundle(bundle: ModelBundle, folder: Path, *, name: str = "model", tags: dict[str, str] | None = None):
    """Log ``bundle`` as a pyfunc model in the active run; returns MLflow's ``ModelInfo``.

    The model carries its signature but no input example: MLflow checks an example by loading the
    whole model a second time in the logging process and predicting: at 1M users / 20M events,
    the training run's peak (19.4 GB, 17.1 without) and 190 s of its 526 s of packaging. The
    signature and the README's request examples say what a request looks like.

    Args:
        bundle: the fitted pipeline.
        folder: scratch folder the bundle is saved to before MLflow copies it.
        name: the model's name in the run.
    """
    from importlib.metadata import PackageNotFoundError, version

    path = bundle.save(folder)
    requirements = []
    for package in REQUIREMENTS:
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return mlflow.pyfunc.log_model(name=name, python_model=str(CODE_FILE), artifacts={ARTIFACT: str(path)},
                                   signature=SIGNATURE, pip_requirements=requirements, tags=tags)


def load_bundle(model_uri: str) -> ModelBundle:
    """The :class:`ModelBundle` behind a pyfunc model URI (``models:/NAME@ALIAS``, ``runs:/...``, a path)."""
    model = mlflow.pyfunc.load_model(model_uri)
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, RecsysModel) or python_model.bundle is None:
        raise RecsysError(f"{model_uri} is not a recsys model (its python model is {type(python_model).__name__})")
    return python_model.bundle


def load_registered(model_uri: str, tracking_uri: str | None = None) -> ModelBundle:
    """:func:`load_bundle` with errors a person can act on: unknown model name, version or alias, bad URI."""

    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys.registry import parse_model_uri, remote_scheme, resolve_version

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    if not model_uri:
        raise RecsysError("no model URI given; use models:/NAME@ALIAS (see `recsys registry list`)")
    if (scheme := remote_scheme(model_uri)) is not None:
        raise RecsysError(f"cannot load model {model_uri!r}: {scheme}:// model URIs are not supported; use "
                          "models:/NAME@ALIAS or models:/NAME/VERSION from the tracking store")
    found = parse_model_uri(model_uri)
    if model_uri.startswith("models:/") and not model_uri.startswith("models:/m-"):
        if found is None:
            raise RecsysError(f"cannot read model URI {model_uri!r}; use models:/NAME@ALIAS or models:/NAME/VERSION")
        resolve_version(*found, tracking_uri)
    try:
        return load_bundle(model_uri)
    except (MlflowException, OSError) as exc:
        raise RecsysError(f"cannot load model {model_uri!r}: {str(exc).splitlines()[0][:300]}") from exc
