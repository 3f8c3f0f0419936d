"""Package attributes that import their module on first use.

``weyl.models``, ``weyl.optim``, ``weyl.data`` and ``weyl.diagnostics`` re-export their public
names this way, so that importing one of their light modules (a config dataclass) does not
pay for torch and timm: composing a config stays fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exported names resolve on access. They win over a submodule of the
    same name (``weyl.optim.spectral_norm`` is the function, as an eager
    ``from .spectral_norm import spectral_norm`` made it), which a module ``__getattr__``
    cannot do once the import system has set the submodule as the attribute."""

    def __getattribute__(self, name: str) -> Any:
        target = super().__getattribute__("__dict__").get("_exports", {}).get(name)
        if target is None:
            return super().__getattribute__(name)
        return getattr(importlib.import_module(target), name)


def lazy_exports(package: str, exports: dict[str, str]) -> None:
    """Make ``package`` (call from its ``__init__``) export ``name`` from ``exports[name]``,
    a module path imported on first access."""
    module = sys.modules[package]
    module._exports = exports
    module.__class__ = _LazyPackage
