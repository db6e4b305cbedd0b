"""The project's exception types.

Every error a user can cause with bad data or bad settings is a :class:`RecsysError`;
the CLI prints its message (no traceback) and exits with code 1. Bad arguments from
calling code raise ``ValueError``/``TypeError`` as usual.
"""

from __future__ import annotations

__all__ = ["RecsysError", "DataContractError", "ConfigError", "NotFittedError"]


class RecsysError(Exception):
    """Base class of every error whose message is meant for the user, not a traceback."""


class DataContractError(RecsysError):
    """Input data breaks the data contract (``recsys/contract.py``): missing file, column, type..."""


class ConfigError(RecsysError):
    """A configuration value or file is invalid; the message names the key and allowed values."""


class NotFittedError(RecsysError):
    """A stage was used before ``fit``; the message says which method to call first."""
