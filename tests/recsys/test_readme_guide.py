"""The README's "Bring your own data" guide, run as written: its two CSV files and its commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from recsys.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _guide() -> tuple[str, str, list[list[str]]]:
    """The guide's items CSV, interactions CSV and the argument lists of its `recsys` commands."""
    text = README.read_text()
    section = text[text.index("## Bring your own data"):]
    section = section[:section.index("\n## ", 1)]
    items, interactions = re.findall(r"```csv\n(.*?)```", section, re.S)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    recsys = [shlex.split(line.split("#")[0])[1:] for line in commands.splitlines() if line.startswith("recsys ")]
    return items, interactions, recsys


@pytest.fixture(scope="module")
def guide():
    return _guide()


def test_the_guides_ten_rows_validate_and_are_too_few_to_train(guide, tmp_path):
    items, interactions, commands = guide
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "items.csv").write_text(items)
    (shop / "interactions.csv").write_text(interactions)
    assert pl.read_csv(shop / "interactions.csv").height == 10
    validate = next(c for c in commands if c[:2] == ["data", "validate"])
    result = CliRunner().invoke(cli, [str(shop) if a == "shop" else a for a in validate])
    assert result.exit_code == 0, result.output
    assert re.search(r"interactions\s+10\n", result.output) and re.search(r"users\s+3\n", result.output)
    train = CliRunner().invoke(cli, ["train", "--data", str(shop), "--no-mlflow"])
    assert train.exit_code == 1 and "Traceback" not in train.output
    assert "error: too little data to evaluate: 10 interactions of 3 user(s) on 5 items" in train.output


def test_the_guides_commands_run_end_to_end(guide, tmp_path, tiny_bert_dir):
    """On a synthetic folder of the same shape (as the guide suggests): validate, train, recommend."""
    _, _, commands = guide
    shop = tmp_path / "shop"
    synth = CliRunner().invoke(cli, ["data", "synth", "--out", str(shop), "--users", "300", "--items", "200"])
    assert synth.exit_code == 0, synth.output
    (tmp_path / "mlflow").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    extra = {"train": ["--tracking-uri", uri, "--set", f"text.model={tiny_bert_dir}"],
             "recommend": ["--tracking-uri", uri]}
    assert [c[0] for c in commands] == ["data", "train", "recommend"]
    for command in commands:
        args = [str(shop) if a == "shop" else str(shop / a.removeprefix("shop/")) if a.startswith("shop/") else a
                for a in command]
        result = CliRunner().invoke(cli, args + extra.get(command[0], []))
        assert result.exit_code == 0, (command, result.output)
    recs = pl.read_parquet(shop / "recs.parquet")
    assert recs["user_id"].n_unique() == 300 and recs.group_by("user_id").len()["len"].max() == 10
