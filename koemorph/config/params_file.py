"""The config tree written out as a commented ``params.yaml`` (``koemorph params``).

``params.yaml`` is the one file users edit: every command reads it for its defaults, ``dvc.yaml``
interpolates its ``paths`` and lists its sections as stage params, and ``koemorph train`` logs the
whole tree to MLflow. Written from :class:`koemorph.config.Config`, so it always has every key; each
section gets its class docstring's first line and each key the comment beside its field in
``config.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap

import yaml

from koemorph.config import Config, to_dict

HEADER = """koemorph configuration: every command reads this file for its defaults (CLI options and
--set section.key=value override it), dvc.yaml reads its paths and sections, and each training
run logs the whole tree to MLflow. Regenerate with all keys and comments: koemorph params -o params.yaml"""

_FIELD = re.compile(r"^\s+(\w+)\s*:[^=]*=.*?#\s?(.*)$")


def _field_comments(cls) -> dict[str, str]:
    """``{field name: comment}`` from the ``# ...`` at the end of each field line of ``cls``'s source."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = _FIELD.match(line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def _value(v) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def params_yaml(cfg: Config | None = None, header: str = HEADER) -> str:
    """``cfg`` (default: the built-in defaults) as YAML text, one commented line per key."""
    cfg = cfg or Config()
    values = to_dict(cfg)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for section in dataclasses.fields(Config):
        cls = type(getattr(cfg, section.name))
        doc = cls.__doc__ if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
        doc = inspect.cleandoc(doc).split("\n\n")[0].replace("``", "`")
        lines += [""] + [f"# {line}" for line in textwrap.wrap(doc, 100)] + [f"{section.name}:"]
        comments = _field_comments(cls)
        for key, value in values[section.name].items():
            note = comments.get(key)
            lines.append(f"  {key}: {_value(value)}" + (f"  # {note}" if note else ""))
    return "\n".join(lines).lstrip("\n") + "\n"


__all__ = ["params_yaml"]
