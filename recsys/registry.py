"""The MLflow Model Registry: versions, the ``challenger``/``champion`` aliases and the promotion gate.

``recsys train`` registers each run's model as a new version with the alias ``challenger``
and tags naming its data fingerprint, git commit and parent run; its per-user test metrics
are an artifact of that run. The gate moves ``champion`` to a version only when its per-user
metric beats the current champion's on the users both were tested on (paired bootstrap: the
whole 95% interval of the difference above 0), or when forced. Works with any tracking URI:
the local SQLite store or a tracking server.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.errors import RecsysError
from recsys.evaluation.bootstrap import paired_bootstrap

__all__ = ["CHALLENGER", "CHAMPION", "PER_USER_ARTIFACT", "GATE_METRIC", "GateResult", "register", "gate",
           "promote", "parse_model_uri", "METRIC_TAG", "WINDOW_TAG", "PARENT_TAG", "PARENT_PER_USER_ARTIFACT",
           "list_models", "show_model", "resolve_version"]

logger = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
PER_USER_ARTIFACT = "test_per_user.parquet"
"""Run artifact with ``user_id`` and one column per metric: what the gate compares."""
PARENT_PER_USER_ARTIFACT = "parent_test_per_user.parquet"
"""An update run's per-user metrics of the version it grew from, on the same test window."""
WINDOW_TAG = "test_window"
"""Version tag: digest of the data fingerprint and split; equal digests mean the same test window."""
PARENT_TAG = "parent_version"
GATE_METRIC = "ndcg@10"
RUN_TAG = "parent_run"
METRIC_TAG = "test_" + GATE_METRIC.replace("@", "_at_")
"""Version tag holding the mean test metric (MLflow tag names allow no ``@``)."""


@dataclass(frozen=True)
class GateResult:
    """What the gate decided and why."""

    name: str
    version: str
    champion: str | None
    """The champion's version before the gate (None: there was none)."""
    promoted: bool
    reason: str
    metric: str = GATE_METRIC
    challenger_mean: float = float("nan")
    champion_mean: float = float("nan")
    diff: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n_users: int = 0

    def render(self) -> str:
        """The comparison, as printed by ``recsys train`` and ``recsys registry promote``."""
        head = f"{self.name} version {self.version}"
        lines = [f"promotion gate: {head} vs champion " + (f"version {self.champion}" if self.champion else "(none)")]
        if self.n_users:
            lines.append(f"  {self.metric}: challenger {self.challenger_mean:.4f}, champion {self.champion_mean:.4f}, "
                         f"difference {self.diff:+.4f} [95% CI {self.ci_low:+.4f}, {self.ci_high:+.4f}] "
                         f"over {self.n_users} users in both tests")
        verdict = f"-> {CHAMPION} = version {self.version}" if self.promoted else f"-> {CHAMPION} unchanged"
        lines.append(f"  {self.reason} {verdict}")
        return "\n".join(lines)


def check_store(uri: str, *, existing: bool) -> None:
    """Fail at once, naming the URI, on a store that cannot be the one meant.

    MLflow creates an empty SQLite store at any mistyped path (the next error is then a puzzling
    "no registered model"), and retries an unreachable server for minutes before a traceback.

    Args:
        uri: the tracking URI.
        existing: the command reads a store (models, runs): it must already exist.

    Raises:
        RecsysError: the SQLite file (or its folder) is missing, or the server does not answer.
    """
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    if scheme == "sqlite" and uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if existing and not path.is_file():
            raise RecsysError(f"no MLflow store at {uri} ({path} does not exist); check --tracking-uri or "
                              "$MLFLOW_TRACKING_URI (a store is created by `recsys train`)")
        if not path.parent.is_dir():
            raise RecsysError(f"MLflow store {uri}: the folder {path.parent} does not exist; check --tracking-uri")
    elif scheme in ("http", "https"):
        import requests

        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5)
        except requests.RequestException as exc:
            raise RecsysError(f"cannot reach the MLflow server at {uri} ({type(exc).__name__}); is it running? "
                              "check --tracking-uri or $MLFLOW_TRACKING_URI") from None


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _missing(exc: Exception) -> bool:
    text = str(exc)
    return "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower() or "does not exist" in text.lower()


LOCAL_MODEL_SCHEMES = ("models", "runs", "file", "")
"""Model URIs that load from the tracking store or a local folder; remote stores (s3, http...) are not supported."""


def remote_scheme(model_uri: str) -> str | None:
    """The scheme of a model URI this product cannot load (``s3``, ``http``...), or None for a local one.

    MLflow would fail on them late and without a usable message (``s3://`` needs botocore, ``http://``
    breaks in its URI parser). A one-letter scheme is a Windows drive, not a store.
    """
    from urllib.parse import urlsplit

    scheme = urlsplit(model_uri).scheme.lower()
    return scheme if scheme not in LOCAL_MODEL_SCHEMES and len(scheme) > 1 else None


def parse_model_uri(model_uri: str) -> tuple[str, str] | None:
    """``(name, version or alias)`` of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; None for any other URI.

    Logged-model URIs (``models:/m-...``) are not registry names and give None too.
    """
    import re

    found = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri or "")
    if found is None or found.group(1).startswith("m-"):
        return None
    return found.group(1), found.group(2) or found.group(3)


def resolve_version(name: str, ref: str, tracking_uri: str | None = None):
    """The model version ``ref`` (a number or an alias) of ``name``; a clear error when it does not exist."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    _registered(client, name, tracking_uri)
    if ref.isdigit() and int(ref) >= 2**63:  # beyond the store's integer: no such version, not a crash
        raise RecsysError(f"model {name!r} has no version {ref}; see `recsys registry show {name}`")
    try:
        return client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        if _missing(exc):
            kind = "version" if ref.isdigit() else "alias"
            raise RecsysError(f"model {name!r} has no {kind} {ref!r}; see `recsys registry show {name}`") from exc
        raise


def _registered(client, name: str, tracking_uri: str | None):
    """The registered model ``name``; a clear error when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _missing(exc):
            raise RecsysError(f"no registered model {name!r} in {tracking_uri}; "
                              "see `recsys registry list` (models are registered by `recsys train`)") from None
        raise


def register(model_uri: str, name: str, *, run_id: str, tags: dict[str, str], tracking_uri: str | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name`` with the alias ``challenger``; returns the version."""
    import mlflow
    from mlflow.utils.logging_utils import disable_logging, enable_logging

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    disable_logging()  # its "Successfully registered ..." prints: recsys says what it registered, once
    try:
        version = mlflow.register_model(model_uri, name, tags={RUN_TAG: run_id, **tags}).version
    finally:
        enable_logging()
    _client(tracking_uri).set_registered_model_alias(name, CHALLENGER, str(version))
    return str(version)


def _per_user(client, version, artifact: str = PER_USER_ARTIFACT) -> pl.DataFrame:
    run_id = version.tags.get(RUN_TAG) or version.run_id
    if not run_id:
        raise RecsysError(f"version {version.version} names no run; its test metrics cannot be found")
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = client.download_artifacts(run_id, artifact, scratch)
        except Exception as exc:  # noqa: BLE001 - any store error means the same thing here
            raise RecsysError(f"run {run_id} of version {version.version} has no {artifact}") from exc
        return pl.read_parquet(Path(path))


def _evidence(client, challenger, champion) -> tuple[pl.DataFrame, pl.DataFrame, str] | None:
    """Per-user metrics of both versions on one test window, and where they come from; None if there are none.

    Same window (same data and split): each version's own test metrics. An update of the champion:
    the update run also evaluated its parent on its window. Otherwise the tests differ and a
    paired comparison would compare users on different events.
    """
    mine, theirs = challenger.tags.get(WINDOW_TAG), champion.tags.get(WINDOW_TAG)
    if mine is None or mine == theirs:  # versions from before the window tag: their own tests
        return _per_user(client, challenger), _per_user(client, champion), "both tested on the same window"
    if challenger.tags.get(PARENT_TAG) == str(champion.version):
        return (_per_user(client, challenger), _per_user(client, challenger, PARENT_PER_USER_ARTIFACT),
                "the champion re-scored on the challenger's window (an update of it)")
    return None


def gate(name: str, version: str, *, force: bool = False, metric: str = GATE_METRIC, n_resamples: int = 1000,
         tracking_uri: str | None = None) -> GateResult:
    """Move ``champion`` to ``version`` when it beats the champion by the paired bootstrap (or ``force``)."""
    client = _client(tracking_uri)
    challenger = resolve_version(name, str(version), tracking_uri)
    try:
        champion = resolve_version(name, CHAMPION, tracking_uri)
    except RecsysError:
        champion = None
    if champion is not None and str(champion.version) == str(challenger.version):
        return GateResult(name, str(challenger.version), str(champion.version), False, "already the champion;")
    result = GateResult(name, str(challenger.version), str(champion.version) if champion else None, True,
                        "no champion yet;" if champion is None else "forced;")
    if champion is not None:
        result = _compare(client, challenger, champion, metric, n_resamples, name, force)
    if result.promoted:
        client.set_registered_model_alias(name, CHAMPION, str(challenger.version))
    return result


def _compare(client, challenger, champion, metric: str, n_resamples: int, name: str, force: bool) -> GateResult:
    base = {"name": name, "version": str(challenger.version), "champion": str(champion.version), "metric": metric}
    evidence = _evidence(client, challenger, champion)
    if evidence is None:
        reason = ("tested on another window than the champion (other data or split): no paired comparison; "
                  "update from the champion (--from) or retrain on the same data;")
        return GateResult(**base, promoted=force, reason=("forced; " if force else "") + reason)
    new, old, source = evidence
    logger.info("promotion gate: %s", source)
    for frame, who in ((new, challenger), (old, champion)):
        if metric not in frame.columns:
            raise RecsysError(f"version {who.version}: {PER_USER_ARTIFACT} has no {metric!r} column")
    both = new.select(C.USER_ID, pl.col(metric).alias("a")).join(old.select(C.USER_ID, pl.col(metric).alias("b")),
                                                                 on=C.USER_ID).drop_nans()
    if both.height == 0:
        reason = "no test user in common with the champion: the versions cannot be compared;"
        return GateResult(**base, promoted=force, reason=("forced; " if force else "") + reason)
    paired = paired_bootstrap(both["a"].to_numpy(), both["b"].to_numpy(), n_resamples=n_resamples)
    stats = {"challenger_mean": float(both["a"].mean()), "champion_mean": float(both["b"].mean()),
             "diff": paired.mean_diff, "ci_low": paired.low, "ci_high": paired.high, "n_users": both.height}
    if paired.better:
        return GateResult(**base, promoted=True, reason="the challenger is better (the CI lies above 0);", **stats)
    reason = "not better: the CI of the difference reaches 0 or below;"
    return GateResult(**base, promoted=force, reason=("forced; " if force else "") + reason, **stats)


def promote(name: str, version: str, alias: str, *, force: bool = False,
            tracking_uri: str | None = None) -> GateResult | None:
    """Set ``alias`` on ``version``; ``champion`` goes through the gate unless ``force``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", alias):
        raise RecsysError(f"alias {alias!r}: only letters, digits, _ and - (e.g. champion, challenger, staging)")
    if alias == CHAMPION:
        return gate(name, version, force=force, tracking_uri=tracking_uri)
    found = resolve_version(name, str(version), tracking_uri)
    _client(tracking_uri).set_registered_model_alias(name, alias, str(found.version))
    return None


def _aliases(client, name: str) -> dict[str, list[str]]:
    by_version: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    return by_version


def list_models(tracking_uri: str | None = None) -> pl.DataFrame:
    """One row per registered model: latest version, aliases, description."""
    client = _client(tracking_uri)
    rows = []
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((model.aliases or {}).items()))
        rows.append({"name": model.name, "versions": len(versions),
                     "latest": max((int(v.version) for v in versions), default=0), "aliases": aliases})
    return pl.DataFrame(rows, schema={"name": pl.String, "versions": pl.Int64, "latest": pl.Int64,
                                      "aliases": pl.String})


def show_model(name: str, tracking_uri: str | None = None) -> pl.DataFrame:
    """One row per version of ``name``: aliases, test metric, git commit, data fingerprint, run."""
    client = _client(tracking_uri)
    _registered(client, name, tracking_uri)  # the name is looked up as it is, never pasted into a filter
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    try:
        versions = [v for v in client.search_model_versions(f"name='{quoted}'") if v.name == name]
    except Exception as exc:  # noqa: BLE001 - a name the store's filter language cannot hold
        raise RecsysError(f"cannot list versions of {name!r}: {str(exc).splitlines()[0][:200]}") from None
    if not versions:
        raise RecsysError(f"no registered model {name!r} in {tracking_uri}; see `recsys registry list`")
    aliases = _aliases(client, name)
    rows = [{"version": int(v.version), "aliases": ", ".join(sorted(aliases.get(str(v.version), []))),
             METRIC_TAG: v.tags.get(METRIC_TAG, ""), "git_commit": v.tags.get("git_commit", ""),
             "data_fingerprint": v.tags.get("data_fingerprint", ""), "parent_run": v.tags.get(RUN_TAG, ""),
             PARENT_TAG: v.tags.get(PARENT_TAG, ""), "note": _run_note(client, v.tags.get(RUN_TAG, ""))}
            for v in versions]
    return pl.DataFrame(rows).sort("version", descending=True)


def _run_note(client, run_id: str) -> str:
    """Why a version should not be trusted: the run that registered it was killed before it finished."""
    from recsys.scratch import INTERRUPTED_TAG, mark_interrupted

    if not run_id:
        return ""
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - a deleted run: nothing to say about it
        return ""
    if run.info.status == "RUNNING" and mark_interrupted(client, [run.info.experiment_id]):
        run = client.get_run(run_id)
    if run.info.status in ("FAILED", "KILLED"):
        why = run.data.tags.get(INTERRUPTED_TAG, "")
        return f"interrupted: its run {run.info.status}" + (f" ({why})" if why else "") + "; do not promote"
    return ""
