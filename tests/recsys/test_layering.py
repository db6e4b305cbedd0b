"""Imports run one way: features <- the core of recsys <- recsys/evaluation <- training.

The evaluation scores fitted models and never fits, so no module of ``recsys/evaluation``
imports ``training``, not even inside a function; the rest of the core reaches training only
lazily (the CLI and the demo, inside their commands), never at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RECSYS = Path(__file__).resolve().parents[2] / "recsys"


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _is_training(module: str) -> bool:
    return module == "training" or module.startswith("training.")


@pytest.mark.parametrize("path", sorted((RECSYS / "evaluation").glob("*.py")), ids=lambda p: p.name)
def test_evaluation_imports_nothing_from_training(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [(node.lineno, m) for node in ast.walk(tree) for m in _imported(node) if _is_training(m)]
    assert found == [], f"{path.name} imports training: {found}"


def test_the_core_reaches_training_only_lazily():
    for path in sorted(RECSYS.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        top = [m for node in tree.body for m in _imported(node) if _is_training(m)]
        assert top == [], f"{path.relative_to(RECSYS.parent)} imports {top} at import time"


def test_no_module_of_recsys_reaches_training_at_all():
    """Apps of a registered model (export, Spark, pyfunc, explain, inspect, drift, registry), the
    core and the CLI never import ``training``, not even inside a function; the training commands
    are plugins (``training/cli.py`` through the ``recsys.commands`` entry points)."""
    for path in sorted(RECSYS.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found = [(node.lineno, m) for node in ast.walk(tree) for m in _imported(node) if _is_training(m)]
        assert found == [], f"{path.relative_to(RECSYS.parent)} imports training: {found}"


def test_features_read_only_the_contract_from_recsys():
    features = RECSYS.parent / "features"
    for path in sorted(features.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        found = [m for node in ast.walk(tree) for m in _imported(node)
                 if m.split(".")[0] in ("recsys", "training") and m != "recsys.contract"
                 and not (m == "recsys" and [a.name for a in node.names] == ["contract"])]
        assert found == [], f"features/{path.name} imports {found}"
