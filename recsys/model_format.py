"""The registered model on disk: a folder of data, read back without unpickling or running its code.

Layout (``FORMAT`` names its version, in ``bundle.json``)::

    bundle.json          format, settings (positives, weights, candidates, features, cold
                         exposure, model names and order), and what a person reads (sizes, versions)
    ids.parquet          user ids by index; items.parquet: item ids by index
    arrays/              one .npy per array: history (csr), popularity, new-item flags, text vectors
    events.parquet       the positive events the behaviour features read
    catalogue.parquet    the catalogue columns the features and explanations read
    ranker.json          the LightGBM boosters in their text format
    models/<name>/       one stage-one scorer each (``recsys.scorers.save_scorer``)

Arrays are plain numeric .npy files (numpy refuses object arrays on load), the text encoder safetensors. A folder of
another format version is refused with a message saying which versions this recsys reads.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from features.table import FeatureConfig
from recsys import contract as C
from recsys.candidates import CandidateConfig
from recsys.errors import RecsysError
from recsys.pipeline import ColdExposure, PipelineState, RankingPipeline
from recsys.ranker import RankerEnsemble
from recsys.scorers import load_scorer, save_scorer
from recsys.scorers.base import load_arrays, load_csr, read_json, save_arrays, save_csr, write_json

__all__ = ["FORMAT", "META_FILE", "write_bundle_folder", "read_bundle_folder"]

FORMAT = "recsys.bundle/1"
"""The on-disk format this code writes and reads; bump it when the layout changes."""
READABLE = (FORMAT,)
META_FILE = "bundle.json"
_USERS, _ITEMS, _EVENTS, _CATALOGUE, _RANKER, _MODELS = ("users.parquet", "items.parquet", "events.parquet",
                                                         "catalogue.parquet", "ranker.json", "models")


def write_bundle_folder(bundle, folder: str | Path, describe: dict[str, Any]) -> Path:
    """Write ``bundle`` (a ``recsys.bundle.ModelBundle``) into ``folder``, replaced atomically.

    Everything goes to a hidden sibling folder first, which is renamed over ``folder`` only when
    complete: a run killed mid-write leaves the old folder (or none), never half a model.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = bundle.state
    pl.DataFrame({C.USER_ID: bundle.user_ids.astype(str)}, schema={C.USER_ID: pl.String}).write_parquet(tmp / _USERS)
    pl.DataFrame({C.ITEM_ID: bundle.item_ids.astype(str)}, schema={C.ITEM_ID: pl.String}).write_parquet(tmp / _ITEMS)
    state.events.write_parquet(tmp / _EVENTS)
    state.items.write_parquet(tmp / _CATALOGUE)
    if state.ranker is not None:  # None: one stage-one model serves alone (no ranker.json)
        state.ranker.save(tmp / _RANKER)
    arrays = save_csr("history", bundle.history) | {"popularity": bundle.popularity, "cold": state.cold}
    if state.item_vectors is not None:
        arrays["item_vectors"] = state.item_vectors
    save_arrays(tmp, arrays)
    for name, model in state.models.items():
        save_scorer(model, tmp / _MODELS / name)
    settings = {
        "format": FORMAT,
        "pipeline": {"name": bundle.pipeline.name, "cold": dataclasses.asdict(bundle.pipeline.cold),
                     "models": list(state.models), "sources": list(state.sources),
                     "ranked": state.ranker is not None,
                     "candidates": dataclasses.asdict(state.candidates),
                     "features": dataclasses.asdict(state.features)},
        "positives": list(bundle.positives), "event_weights": bundle.event_weights, "meta": bundle.meta,
    }
    write_json(tmp / META_FILE, settings | {"describe": describe})
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def read_bundle_folder(folder: str | Path):
    """The ``ModelBundle`` :func:`write_bundle_folder` wrote; a clear error for anything else."""
    from recsys.bundle import ModelBundle

    folder = Path(folder)
    if not (folder / META_FILE).is_file():
        raise RecsysError(f"{folder}: no {META_FILE}; not a recsys model folder")
    settings = read_json(folder / META_FILE)
    found = settings.get("format")
    if found not in READABLE:
        raise RecsysError(f"{folder / META_FILE}: model format {found!r} is not one this recsys reads "
                          f"({', '.join(READABLE)}); load it with the recsys version that wrote it, or retrain")
    try:
        spec = settings["pipeline"]
        arrays = load_arrays(folder)
        models = {name: load_scorer(folder / _MODELS / name) for name in spec["models"]}
        ranker = RankerEnsemble.load(folder / _RANKER) if spec.get("ranked", True) else None
        state = PipelineState(models, tuple(spec["sources"]), ranker,
                              pl.read_parquet(folder / _EVENTS), pl.read_parquet(folder / _CATALOGUE),
                              arrays["cold"], CandidateConfig(**spec["candidates"]), FeatureConfig(**spec["features"]),
                              arrays.get("item_vectors"))
        pipeline = RankingPipeline(state, name=spec["name"], cold=ColdExposure(**spec["cold"]))
        users = pl.read_parquet(folder / _USERS)[C.USER_ID].to_numpy().astype(object)
        items = pl.read_parquet(folder / _ITEMS)[C.ITEM_ID].to_numpy().astype(object)
        weights = {str(k): float(v) for k, v in settings["event_weights"].items()}
        return ModelBundle(pipeline, users, items, load_csr("history", arrays), arrays["popularity"],
                           tuple(settings["positives"]), weights, settings.get("meta", {}))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise RecsysError(f"{folder}: model folder is damaged or incomplete ({type(exc).__name__}: {exc})") from exc

