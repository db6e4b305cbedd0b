"""What a person sees in the terminal: library noise silenced, progress bars only where they can redraw.

A run's output is read by people, often as a log file: progress bars that redraw over
themselves become hundreds of lines there, and the banners of the libraries underneath
(Lightning's accelerator lines and tips, Hugging Face's weight-loading bars, deprecation
warnings raised inside Lightning) tell a recsys user nothing they can act on. This module is
imported by the CLI before any of them, and by the training code around the fits that raise them.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LIBRARY_NOISE", "bars", "quiet_environment", "quiet_libraries", "stderr_is_terminal"]

LIBRARY_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # raised inside Lightning's own code
    r".*module\(s\) in eval mode at the start of training.*",  # freeze:N's frozen layers are in eval mode by design
    r".*does not have many workers which may be a bottleneck.*",  # the tower's batches are cached token ids
)
"""Warnings from libraries that are expected in a recsys run (regular expressions of their messages)."""

_LIBRARY_LOGGERS = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch")


def quiet_environment() -> None:
    """No weight-loading or download bars from Hugging Face or MLflow, and their warnings and errors only: through
    the environment before they are imported, through their own switches where a host program imported them."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read by MLflow at each download
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # its "creating tables", "validating input" lines
    if "mlflow" in sys.modules:
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within: Lightning's banners and tips (INFO logs) and the expected library warnings are not shown.

    Errors and unexpected warnings still are; ``recsys -v`` turns the banners back on (DEBUG logging).
    """
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    loggers = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        if not verbose:
            for pattern in LIBRARY_NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            for lg in loggers:
                lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def bars(show: bool) -> bool | None:
    """tqdm's ``disable`` for a run that wants progress: shown on a terminal, never in a log file or pipe.

    ``None`` is tqdm's own "disable when not a TTY"; ``show=False`` always hides.
    """
    return None if show else True


def stderr_is_terminal() -> bool:
    """Whether progress displays can redraw in place (stderr is where bars and logs go)."""
    return sys.stderr.isatty()
