"""Shared checks for the frozen ``<Thing>Config`` dataclasses.

Every config validates itself in ``__post_init__``; these helpers keep the messages uniform
("``ALSConfig.factors`` must be >= 1; got 0") so a user can find the field and the fix.
"""

from __future__ import annotations

from recsys.errors import ConfigError

__all__ = ["check_at_least", "check_above", "load_config", "flatten"]


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


def _coerce(value: object, kind: object, where: str) -> object:
    """YAML reads ``1e-4`` as a string; numbers are converted by the field's declared type."""
    if isinstance(value, str) and kind in (float, int, float | None, int | None):
        try:
            return float(value) if float in getattr(kind, "__args__", (kind,)) else int(value)
        except ValueError:
            raise ConfigError(f"config key '{where}': {value!r} is not a number") from None
    return value


def _set_path(tree: dict, dotted: str, raw: str) -> None:
    import yaml

    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(cls: type, path: str | None = None, overrides: tuple[str, ...] = (),
                base: tuple[str, ...] = ()) -> object:
    """Build config dataclass ``cls`` from an optional YAML file plus ``key.sub=value`` overrides.

    Flag beats file beats ``base`` (``key=value`` choices made for the data, e.g. the default
    recipe) beats the dataclass defaults. Values are parsed as YAML (``3``, ``1e-4``, ``true``,
    ``[a, b]``). Unknown keys and invalid values raise ``ConfigError`` naming the key.
    """
    import yaml

    tree: dict = {}
    for item in base:
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), raw)
    if path is not None:
        try:
            loaded = yaml.safe_load(open(path, encoding="utf-8"))  # noqa: SIM115 - tiny file
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        tree = _merged(tree, loaded) if isinstance(loaded, dict) else (loaded or tree)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. text.max_epochs=2")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), raw)
    return _build(cls, tree, "")


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
