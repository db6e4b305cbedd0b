"""The ``recsys`` command line: thin click commands, one library call each.

``common`` holds the root group, the error boundary and logging; each sibling module adds one
family of commands: ``data`` (datasets), ``train`` (demo, train, evaluate: they reach
``training`` inside the command), ``serve`` (recommend, explain, inspect, drift, registry:
the apps of a registered model, which never import training).
"""

from __future__ import annotations

from recsys.cli import data, serve, train  # noqa: F401  (each registers its commands on ``cli``)
from recsys.cli.common import cli

__all__ = ["main", "cli"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="recsys")
