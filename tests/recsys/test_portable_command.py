"""Result files record the command that made them without this machine's paths."""

from pathlib import Path

from recsys.evaluation.run import portable_command


def test_paths_beside_the_checkout_become_relative_and_others_lose_their_machine_part(tmp_path):
    root = tmp_path / "checkout"
    beside = tmp_path / "datasets" / "movielens"
    elsewhere = Path(tmp_path.anchor) / "scratch" / "runs" / "store"
    argv = ["--data", str(beside), "--tracking-uri", f"sqlite:///{elsewhere}/mlflow.db",
            "--out", str(elsewhere / "shot.png"), "--k", "100"]
    line = portable_command("benchmarks/x.py", argv, root)
    assert line == ("python benchmarks/x.py --data ../datasets/movielens --tracking-uri "
                    "sqlite:///<local>/store/mlflow.db --out <local>/store/shot.png --k 100")
    assert str(tmp_path) not in line and "scratch" not in line
