"""Package attributes that import their module on first use (PEP 562).

``weyl.models``, ``weyl.optim``, ``weyl.data`` and ``weyl.diagnostics`` re-export their public
names this way, so that importing one of their light modules (a config dataclass) does not
pay for torch and timm: composing a config stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name`` from ``exports[name]`` (a module path)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
