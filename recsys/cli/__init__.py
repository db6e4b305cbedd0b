"""The ``recsys`` command line: thin click commands, one library call each.

``common`` holds the root group, the error boundary and logging; each sibling module adds one
family of commands: ``data`` (datasets), ``serve`` (recommend, explain, inspect, drift,
registry: the apps of a registered model). The commands that fit models (``demo``, ``train``,
``evaluate``) are plugins from ``training/cli.py``, found through the ``recsys.commands``
entry-point group, so no module of ``recsys`` imports training.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from recsys.cli import data, serve  # noqa: F401  (each registers its commands on ``cli``)
from recsys.cli.common import cli

for _plugin in entry_points(group="recsys.commands"):
    cli.add_command(_plugin.load(), _plugin.name)

__all__ = ["main", "cli"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="recsys")
