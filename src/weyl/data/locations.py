"""Where prepared data sets live by default, and the error that says how to create one."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "WEYL_DATA_DIR"


def data_root() -> Path:
    """``$WEYL_DATA_DIR`` if set, else ``./data_cache`` under the current working directory."""
    env = os.environ.get(DATA_DIR_ENV, "")
    return Path(env) if env else Path.cwd() / "data_cache"


def default_text_dir(name: str, tokenizer: str) -> Path:
    """Default directory of a token set: ``kjv_<tokenizer>`` for KJV, ``<name>`` otherwise."""
    return data_root() / (f"{name}_{tokenizer}" if name == "kjv" else name)


def resolve_dir(path: str, default: Path) -> Path:
    """``path`` (with ``~`` expanded) when given, else ``default``."""
    return Path(path).expanduser() if path else default


def missing_data_error(what: str, looked_at: Path, command: str) -> FileNotFoundError:
    """One-line error naming the path that was searched and the command that creates it."""
    return FileNotFoundError(
        f"{what} not found at {looked_at}: create it with `{command}` (or set data.path)"
    )
