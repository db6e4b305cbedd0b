"""The ``recsys train`` arguments of a fast, tiny, registered pipeline (shared by the serving tests)."""

from __future__ import annotations

from pathlib import Path


def tiny_train_args(data: Path, tracking_uri: str, bert: Path) -> list[str]:
    """CLI arguments: the tiny BERT fine-tuned for one epoch, no ablations, no curve, 100 bootstrap resamples."""
    return ["train", "--data", str(data), "--tracking-uri", tracking_uri,
            "--set", f"text.model={bert}", "--set", "text.finetune.mode=full", "--set", "text.max_epochs=1",
            "--set", "split.mode=global", "--set", "history=train+valid", "--set", "n_bootstrap=100",
            "--set", "baselines=[popularity]", "--set", "pipeline.ablations=false", "--set", "compare_zero_shot=false",
            "--set", "pipeline.cold_curve_slots=[]",
            # the tiny BERT's "pretrained" weights are random: what these runs study is what training does
            "--set", "text.pretrained_fallback=false"]
