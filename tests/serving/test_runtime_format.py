"""The runtime is not training: a registered model loads and serves without training code, and is data.

* Loading ``models:/recsys@champion``, scoring users through the pyfunc and exporting a file,
  in a fresh interpreter, imports no ``training`` module and none of the fitting libraries.
* The registered artifact tree holds only data files (no pickle, no torch checkpoint), and its
  arrays load with ``allow_pickle=False``.
* A model folder of an unknown format version is refused with a message that says what to do.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest

from recsys.bundle import ModelBundle
from recsys.errors import RecsysError
from recsys.explain import explain
from recsys.model_format import FORMAT, META_FILE
from recsys.pipeline import RankingPipeline
from recsys.topk import top_k

CHAMPION = "models:/recsys@champion"
FITTING = ("training", "peft", "pytorch_lightning", "lightning", "lightfm", "implicit")
"""Top-level packages that only fitting needs; the runtime must import none of them."""
DATA_FILES = {".json", ".parquet", ".npy", ".safetensors", ".txt", ".yaml", ".py"}
"""File types a registered model may hold."""
MLFLOW_YAML = {"MLmodel", "registered_model_meta"}
"""MLflow's own files without a suffix (both YAML)."""

RUNTIME_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import mlflow, pandas as pd
    from recsys.export import ExportConfig, recommend_to_file
    from recsys.pyfunc_model import load_registered

    uri, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    bundle = load_registered("models:/recsys@champion", uri)
    users = [str(u) for u in bundle.user_ids[:3]]
    direct = bundle.recommend(users, 5)
    served = mlflow.pyfunc.load_model("models:/recsys@champion").predict(pd.DataFrame({"user_id": users}))
    summary = recommend_to_file("models:/recsys@champion", data, out, ExportConfig(k=5), tracking_uri=uri,
                                show_progress=False)
    top = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({"modules": top, "direct_rows": direct.height, "served_rows": len(served),
                      "exported_users": summary.users}))
""")


@pytest.fixture(scope="module")
def artifact_tree(registered_model, tmp_path_factory) -> Path:
    _, uri = registered_model
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=CHAMPION,
                                                    dst_path=str(tmp_path_factory.mktemp("champion"))))


def test_loading_scoring_and_exporting_import_no_training_code(registered_model, tmp_path):
    data, uri = registered_model
    done = subprocess.run([sys.executable, "-c", RUNTIME_SCRIPT, uri, str(data), str(tmp_path / "recs.parquet")],
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["direct_rows"] == 15 and report["served_rows"] == 30 and report["exported_users"] > 0
    assert [name for name in report["modules"] if name in FITTING] == []
    assert "recsys" in report["modules"] and "torch" in report["modules"]  # it really loaded and scored


def test_registered_artifacts_are_data_not_pickles(artifact_tree):
    files = [p for p in artifact_tree.rglob("*") if p.is_file()]
    assert any(p.name == META_FILE for p in files) and any(p.suffix == ".safetensors" for p in files)
    odd = [str(p.relative_to(artifact_tree)) for p in files if p.suffix not in DATA_FILES and p.name not in MLFLOW_YAML]
    assert odd == []  # no .pkl, .pt, .bin, .ckpt, .joblib: nothing a loader would unpickle
    for path in (p for p in files if p.suffix == ".npy"):
        assert np.load(path, allow_pickle=False).dtype != object  # an object array would raise here
    mlmodel = (artifact_tree / "MLmodel").read_text()
    # MLflow "models from code": the loader runs the logged .py file; no python_model.pkl to unpickle
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel and "python_model.pkl" not in mlmodel
    assert any(p.name == "pyfunc_code.py" for p in files)


def test_unknown_format_version_is_refused_with_a_clear_error(artifact_tree, tmp_path):
    folder = next(p.parent for p in artifact_tree.rglob(META_FILE))
    bundle = ModelBundle.load(folder)
    assert bundle.n_users > 0
    copy = bundle.save(tmp_path / "bundle")
    settings = json.loads((copy / META_FILE).read_text())
    assert settings["format"] == FORMAT
    settings["format"] = "recsys.bundle/99"
    (copy / META_FILE).write_text(json.dumps(settings))
    with pytest.raises(RecsysError, match=r"model format 'recsys.bundle/99' is not one this recsys reads"):
        ModelBundle.load(copy)


def test_a_saved_bundle_reads_back_to_the_same_lists(artifact_tree, tmp_path):
    bundle = ModelBundle.load(next(p.parent for p in artifact_tree.rglob(META_FILE)))
    again = ModelBundle.load(bundle.save(tmp_path / "again"))
    users = [str(u) for u in bundle.user_ids[:20]] + ["nobody"]
    first, second = bundle.recommend(users, 10), again.recommend(users, 10)
    assert first.select("user_id", "item_id", "rank").equals(second.select("user_id", "item_id", "rank"))
    np.testing.assert_allclose(first["score"].to_numpy(), second["score"].to_numpy(), rtol=1e-6)


def test_a_model_served_by_one_stage_one_model_saves_loads_ranks_and_explains(artifact_tree, tmp_path):
    """What the ranker gate registers when a single model wins: no ranker.json, the same interface."""
    bundle = ModelBundle.load(next(p.parent for p in artifact_tree.rglob(META_FILE)))
    state = dataclasses.replace(bundle.state, models={"lightfm": bundle.state.models["lightfm"]},
                                sources=("lightfm",), ranker=None)
    alone = dataclasses.replace(bundle, pipeline=RankingPipeline(state, name="pipeline"))
    folder = alone.save(tmp_path / "alone")
    assert not (folder / "ranker.json").exists()
    assert json.loads((folder / META_FILE).read_text())["pipeline"]["ranked"] is False
    loaded = ModelBundle.load(folder)
    assert loaded.state.ranker is None and loaded.describe()["ranked_by"] == "lightfm"
    users = [str(u) for u in bundle.user_ids[:8]]
    recs = loaded.recommend(users, 10)
    # exactly LightFM's own top 10 of each user, seen items left out
    index = loaded.user_index(np.array(users, dtype=object))
    history = loaded.history[index]
    expected = top_k(loaded.state.models["lightfm"].score(index, history), 10, exclude=history)
    got = recs.sort("user_id", "rank").group_by("user_id", maintain_order=True).agg("item_id")
    by_user = dict(zip(got["user_id"].to_list(), got["item_id"].to_list(), strict=True))
    for row, user in enumerate(users):
        assert by_user[user] == [str(loaded.item_ids[i]) for i in expected[row] if i >= 0]
    explained = explain(loaded, users[:2], k=3)
    assert explained.height == 6 and explained["sources"].to_list() == ["lightfm"] * 6
    assert all("ranked by the LightFM score alone" in reason for reason in explained["reason"].to_list())
