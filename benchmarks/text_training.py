"""Training throughput of the text tower per fine-tuning mode, side by side in one run.

all-MiniLM-L6-v2, batch 32, max length 64, 2 threads, on two kinds of data: the demo's
impressions (short synthetic texts, BCE on the batch's items) and MovieLens (real titles and
overviews, positives only: the batch's items plus 16 sampled negatives are encoded per step):
each mode runs real Lightning training steps and we time the steps after a warm-up. For
``freeze:N`` the frozen layers' outputs are cached per item, so its steady-state speed is
reported (the cache fills during the warm-up and the first steps).

    python benchmarks/text_training.py [--steps 20] [--modes full,lora,bitfit,freeze:4,prompt]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.evaluation.eval_data import EvalConfig, build_eval_data  # noqa: E402
from recsys.evaluation.run import git_commit, portable_command  # noqa: E402
from recsys.importers import import_dataset  # noqa: E402
from recsys.io import Dataset, DatasetPaths, load_dataset  # noqa: E402
from recsys.synthetic import DEMO_CONFIG, generate_synthetic  # noqa: E402
from training.encoder_modes import FineTuneConfig, build_encoder, count_parameters  # noqa: E402
from training.fit_text import TextTowerRecommender  # noqa: E402
from training.text_data import TextDataModule, split_holdout  # noqa: E402
from training.text_tower import TextTowerConfig, tower_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "text_training.json"


class StepTimer(L.Callback):
    """Wall time of every training step (forward, backward, optimiser)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def measure(mode: str, fit, steps: int, warmup: int, batch_size: int) -> dict[str, float]:
    config = TextTowerConfig(finetune=FineTuneConfig(mode=mode), max_length=64, batch_size=batch_size,
                             max_steps=steps + warmup, max_epochs=1, sampled_negatives=16)
    tower = TextTowerRecommender(config)
    tokens, examples, use_impressions = tower._prepare(fit)
    encoder = build_encoder(None, config.finetune)
    trainable, total = count_parameters(encoder)
    module = tower._module(encoder, tokens, examples, fit, use_impressions)
    # The per-epoch history cache is not part of a step (only steps are timed): a zero cache
    # stands in for it so the benchmark does not spend minutes encoding MovieLens histories.
    module.cache = torch.zeros((fit.n_items, encoder.hidden_size))
    module.refresh_cache = lambda: None
    train, holdout = split_holdout(examples, 0.1)
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps + warmup, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=TextDataModule(train, holdout, tokens.lengths, batch_size=batch_size))
    step_s = float(np.median(timer.times[warmup:]))
    return {"examples_per_s": batch_size / step_s, "step_ms": 1000 * step_s, "trainable_params": trainable,
            "total_params": total}


def _fit_input(dataset: str, source: Path):
    if dataset == "demo":
        items, inter = generate_synthetic(DEMO_CONFIG)
        return build_eval_data(Dataset(items, inter), EvalConfig()).test.fit
    with tempfile.TemporaryDirectory() as tmp:
        import_dataset("movielens", source, tmp)
        data = load_dataset(DatasetPaths.from_dir(tmp))
    return build_eval_data(data, EvalConfig()).test.fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="full,lora,bitfit,freeze:4,prompt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--datasets", default="demo,movielens",
                        help="demo: synthetic impressions, short texts (BCE); movielens: real titles and "
                             "overviews, positives only (sampled softmax, 16 extra negatives per batch).")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "movielens")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for dataset in args.datasets.split(","):
        fit = _fit_input(dataset, args.data)
        for mode in args.modes.split(","):
            L.seed_everything(0, verbose=False)
            figures = measure(mode, fit, args.steps, args.warmup, args.batch_size)
            name = tower_name(TextTowerConfig(finetune=FineTuneConfig(mode=mode)))
            rows += [{"model": name, "metric": k, "value": round(v, 2), "dataset": dataset}
                     for k, v in figures.items()]
            print(f"{dataset:<10} {name:<14} {figures['examples_per_s']:8.1f} examples/s  "
                  f"{figures['trainable_params']:>10,} trainable", flush=True)
    payload = {"benchmark": "text_training", "dataset": args.datasets,
               "split": EvalConfig().split.describe(),
               "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
               "command": portable_command("benchmarks/text_training.py", sys.argv[1:], ROOT),
               "git_commit": git_commit(ROOT), "model": "all-MiniLM-L6-v2", "max_length": 64,
               "batch_size": args.batch_size, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(pl.DataFrame(rows).pivot(on="metric", index=["dataset", "model"], values="value"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
