"""Shared checks for the frozen ``<Thing>Config`` dataclasses.

Every config validates itself in ``__post_init__``; these helpers keep the messages uniform
("``ALSConfig.factors`` must be >= 1; got 0") so a user can find the field and the fix.
"""

from __future__ import annotations

__all__ = ["check_at_least", "check_above"]


def check_at_least(config: object, **bounds: float) -> None:
    """Raise ``ValueError`` naming ``Class.field`` for the first field below its lower bound."""
    for name, low in bounds.items():
        value = getattr(config, name)
        if not value >= low:  # written so that NaN fails too
            raise ValueError(f"{type(config).__name__}.{name} must be >= {low}; got {value!r}")


def check_above(config: object, **bounds: float) -> None:
    """Raise ``ValueError`` naming ``Class.field`` for the first field not strictly above its bound."""
    for name, low in bounds.items():
        value = getattr(config, name)
        if not value > low:
            raise ValueError(f"{type(config).__name__}.{name} must be > {low}; got {value!r}")
