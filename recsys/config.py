"""Shared checks for the frozen ``<Thing>Config`` dataclasses.

Every config validates itself in ``__post_init__``; these helpers keep the messages uniform
("``ALSConfig.factors`` must be >= 1; got 0") so a user can find the field and the fix.
"""

from __future__ import annotations

import collections.abc
import math
import types

from recsys.errors import ConfigError

__all__ = ["check_at_least", "check_above", "load_config", "flatten"]

_INT_LIMIT = 2**63
"""Whole-number settings must fit in 64 bits (NumPy, PyTorch and Lightning hold them as int64)."""


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


def _field_types(cls: type) -> dict[str, object]:
    import typing

    return typing.get_type_hints(cls)


def _build(cls: type, values: dict, path: str) -> object:
    """Instantiate dataclass ``cls`` from a nested mapping, naming any unknown key with its path."""
    import dataclasses

    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of {cls.__name__} fields, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            raise ConfigError(f"unknown config key '{where}'; valid keys here: {', '.join(fields)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            # one key of a nested block overrides the parent's default for it, not the block class's
            # (TrainConfig.split defaults to per-user 70/10/20; ``split.mode=global`` keeps 10/20)
            default = _default_of(fields[key])
            if isinstance(value, dict) and dataclasses.is_dataclass(default):
                value = _merged(_tree(default), value)
            kwargs[key] = _build(kind, value, where)
        elif isinstance(value, list):
            if not _takes_sequence(kind):
                raise ConfigError(f"config key '{where}': expected one value, got the list {value!r}")
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = _coerce(value, kind, where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from exc


def _default_of(field) -> object:
    """A dataclass field's default value (its factory called), or None when it has none."""
    import dataclasses

    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _tree(instance: object) -> dict:
    """A dataclass instance as the nested mapping ``_build`` reads (nested dataclasses as mappings)."""
    import dataclasses

    return {f.name: _tree(v) if dataclasses.is_dataclass(v := getattr(instance, f.name)) else v
            for f in dataclasses.fields(instance)}


def _takes_sequence(kind: object) -> bool:
    """Whether a field of type ``kind`` holds a tuple/list (a YAML list), e.g. ``tuple[int, ...] | None``."""
    import typing

    kinds = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    return any(k in (tuple, list, object, typing.Any) or typing.get_origin(k) in (tuple, list, collections.abc.Sequence)
               for k in kinds)


def _coerce(value: object, kind: object, where: str) -> object:
    """A number for a numeric field: YAML reads ``1e-4`` and ``1e20`` as strings, and ``2.0`` as a float.

    A whole-number field refuses fractions, NaN, infinities and values beyond 64 bits here, naming
    the key: further on they would fail without a name (``int(nan)``) or overflow inside a library
    (``text.max_epochs=1e20``).
    """
    if kind not in (float, int, float | None, int | None) or isinstance(value, bool):
        return value
    whole = float not in getattr(kind, "__args__", (kind,))
    if isinstance(value, str):
        try:
            value = int(value) if whole and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise ConfigError(f"config key '{where}': {value!r} is not a number") from None
    if whole and isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise ConfigError(f"config key '{where}': {value!r} is not a whole number")
        value = int(value)
    if whole and isinstance(value, int) and not -_INT_LIMIT <= value < _INT_LIMIT:
        raise ConfigError(f"config key '{where}': {value:.3g} is too large for a whole-number setting")
    return value


def _set_path(tree: dict, dotted: str, raw: str) -> None:
    import yaml

    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {dotted}={raw}: not a valid YAML value ({getattr(exc, 'problem', None) or exc}); "
                          "quote text, e.g. --set 'text.model=\"my model\"'") from exc


def load_config(cls: type, path: str | None = None, overrides: tuple[str, ...] = (),
                base: tuple[str, ...] = ()) -> object:
    """Build config dataclass ``cls`` from an optional YAML file plus ``key.sub=value`` overrides.

    Flag beats file beats ``base`` (``key=value`` choices made for the data, e.g. the default
    recipe) beats the dataclass defaults. Values are parsed as YAML (``3``, ``1e-4``, ``true``,
    ``[a, b]``). Unknown keys and invalid values raise ``ConfigError`` naming the key.
    """
    tree: dict = {}
    for item in base:
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), raw)
    if path is not None:
        loaded = _read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of {cls.__name__} keys (`key: value` "
                              f"lines), not a {type(loaded).__name__}")
        tree = _merged(tree, loaded or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. text.max_epochs=2")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), raw)
    return _build(cls, tree, "")


def _read_yaml(path: str) -> object:
    """The parsed YAML file (None when empty); a file that cannot be read or parsed is a one-line ConfigError."""
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            return yaml.safe_load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the config file as UTF-8") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {what}") from exc


def _merged(under: dict, over: dict) -> dict:
    """``over`` on top of ``under``, nested dicts merged key by key."""
    out = dict(under)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: nested config dicts as MLflow params."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out
