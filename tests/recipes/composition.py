"""One cached composition per set of overrides, shared by the recipe tests."""

from __future__ import annotations

from functools import cache

from weyl.config import TrainConfig
from weyl.config.compose import load_config


@cache
def composed(*overrides: str) -> TrainConfig:
    """``load_config(overrides)``, composed once per session (Hydra dominates the test time)."""
    return load_config(list(overrides))
