"""The error a bad config value raises, and the two checks every config dataclass uses.

Each component's config (``models/model_config.py``, ``optim/optim_config.py``, ...) checks its
own values in ``__post_init__`` with these, so a bad value fails with one line that names its
dotted key from the config root: ``optim.lr: must be > 0, got -0.001``. This module imports
nothing of weyl's, so ``models/`` and ``optim/`` can use it without depending on the config root.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

E = TypeVar("E", bound=Enum)


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key."""


def require(ok: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("<key>: <message>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def one_of(choices: type[E], value: Any, key: str) -> E:
    """``value`` as a member of the enum ``choices`` (by value), else a one-line ConfigError."""
    try:
        return choices(value)
    except ValueError:
        allowed = ", ".join(str(c.value) for c in choices)
        raise ConfigError(f"{key}: unknown '{value}'; choose one of: {allowed}") from None
