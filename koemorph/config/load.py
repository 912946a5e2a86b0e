"""Reading the config: defaults <- ``params.yaml`` <- ``--set`` overrides, coerced to the fields'
types with errors that name the key; and the tree as plain dicts, flattened or hashed."""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from koemorph.config.rules import ConfigError
from koemorph.config.tree import Config


def to_dict(obj) -> dict:
    """The config (or a section) as plain JSON-able dicts/lists."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_hash(obj) -> str:
    """Short stable hash of a config section (canonical JSON)."""
    from koemorph.io.digest import short_hash

    return short_hash(to_dict(obj))


_KINDS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def _coerce(tp, value, where: str):
    """``value`` (from YAML or ``--set``) as type ``tp``; :class:`ConfigError` naming ``where`` if it
    does not fit."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping of keys, got {value!r}")
        return _build(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}")
        args = get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return origin(_coerce(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(where, f"expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if tp in _KINDS:
        return _scalar(tp, value, where)
    return value


def _scalar(tp, value, where: str):
    if tp is bool and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    fits = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) or (isinstance(value, float) and value.is_integer()),
        float: isinstance(value, (int, float)) or _is_number_text(value),
        str: isinstance(value, (str, int, float)),
    }[tp] and not (tp is not bool and isinstance(value, bool))
    if not fits:
        raise ConfigError(where, f"expected {_KINDS[tp]}, got {value!r}")
    return tp(value)


def _is_number_text(value) -> bool:
    try:
        return isinstance(value, str) and float(value) is not None
    except ValueError:
        return False


def _build(cls, values: dict, where: str):
    """``cls`` from ``values`` over its defaults; every key checked (known, typed, valid)."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            what = "section" if cls is Config else "key"
            raise ConfigError(
                f"{where}.{key}".lstrip("."), f"unknown {what} ({hint}valid: {', '.join(names)})"
            )
    base = cls()
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}".lstrip(".")
        kwargs[f.name] = (
            _coerce(hints[f.name], values[f.name], key) if f.name in values else getattr(base, f.name)
        )
    return cls(**kwargs)


def load_section(cls, values: dict, name: str):
    """One section of the tree (e.g. a checkpoint's ``FeaturesConfig``) from plain ``values``, checked
    by its own rules only (the rules spanning sections need the whole tree)."""
    return _build(cls, values, name)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """``"train.lr=3e-4"`` -> ``{"train": {"lr": 3e-4}}`` (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("", f"--set {text!r}: expected section.key=value, e.g. --set features.fps=60")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(key.strip(), f"--set value {raw!r} is not valid YAML ({problem})") from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def read_params(path: str | Path) -> dict:
    """The mapping in a params YAML file; :class:`ConfigError` naming the file (and line) if it
    cannot be read or parsed."""
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, f"invalid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the config file ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(str(path), f"expected a mapping of sections at the top level, got {values!r}")
    return values


def load_config(params: str | Path | None = "params.yaml", overrides=(), extra: dict | None = None) -> Config:
    """Defaults <- ``params`` YAML (if it exists) <- ``extra`` dict <- ``overrides`` strings.

    Raises :class:`ConfigError` (a ValueError) naming the key or file and the problem."""
    values: dict = {}
    if params is not None and Path(params).is_file():
        values = read_params(params)
    if extra:
        values = _merge(values, extra)
    for text in overrides:
        values = _merge(values, parse_override(text))
    return _build(Config, values, "")
