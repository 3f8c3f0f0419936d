"""One line ``<key>: <what is wrong>`` from an OmegaConf error of a structured config.

Hydra (while composing) and OmegaConf (while building the typed config) raise errors that name
the key (``full_key``), the value and the dataclass (``object_type``); the dataclass's type
hints say what was expected. The line has the same shape as the value checks' messages.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from typing import Any

from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from weyl.value_checks import ConfigError


def type_name(tp: Any) -> str:
    """``int``, ``float or null``, ``list of int`` for an annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _enum_values(tp: Any) -> str:
    """``a, b, c`` for an Enum annotation (``a, b or null`` when optional), else ``""``."""
    args = typing.get_args(tp) or (tp,)
    enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
    if not enums:
        return ""
    values = ", ".join(str(m.value) for m in enums[0])
    return f"{values} or null" if type(None) in args else values


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def omegaconf_error_line(exc: Exception, root: type) -> ConfigError:
    """The one-line :class:`ConfigError` for ``exc``; ``root`` is the config's root dataclass
    (its fields are the allowed top-level keys)."""
    key = str(getattr(exc, "full_key", "") or "")
    object_type = getattr(exc, "object_type", None)
    text = str(getattr(exc, "msg", "") or exc)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    if isinstance(exc, ConfigKeyError | ConfigAttributeError) and "not in" in first:
        # "Key 'foo' not in 'OptimConfig'": full_key names the unknown key itself.
        if "." not in key:
            name = key or re.search(r"Key '([^']+)'", first).group(1)
            allowed = ", ".join(sorted(f.name for f in dataclasses.fields(root)))
            return ConfigError(f"{name}: unknown top-level key; allowed keys: {allowed}")
        allowed = (
            ", ".join(f.name for f in dataclasses.fields(object_type))
            if _is_dataclass_type(object_type)
            else "see `weyl train --cfg job`"
        )
        return ConfigError(f"{key}: unknown key; allowed keys: {allowed}")
    expected = None
    if key and _is_dataclass_type(object_type):
        expected = typing.get_type_hints(object_type).get(key.rsplit(".", 1)[-1])
    if expected is not None:
        value = getattr(exc, "value", None)
        options = _enum_values(expected)
        if options:
            return ConfigError(f"{key}: unknown '{value}'; choose one of: {options}")
        shown = f"'{value}'" if isinstance(value, str) else repr(value)
        return ConfigError(f"{key}: expected {type_name(expected)}, got {shown}")
    return ConfigError(f"{key or 'config'}: {first}")
