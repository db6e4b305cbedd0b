"""Result files record the command that made them without this machine's paths."""

from pathlib import Path

from recsys.evaluation.run import portable_command

ROOT = Path("/srv/work/main")


def test_paths_beside_the_checkout_become_relative_and_others_lose_their_machine_part():
    line = portable_command("benchmarks/x.py", ["--data", "/srv/work/shared/data/movielens", "--tracking-uri",
                                                "sqlite:////tmp/scratch/store/mlflow.db", "--out", "/tmp/shot.png",
                                                "--k", "100"], ROOT)
    assert line == ("python benchmarks/x.py --data ../shared/data/movielens --tracking-uri "
                    "sqlite:///<local>/store/mlflow.db --out <local>/shot.png --k 100")
    assert "/tmp" not in line and "/srv" not in line
