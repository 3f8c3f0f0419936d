"""The trainer: one loop for every model family, launched as 1 process, torchrun or Slurm.

Entry point: :func:`run_training` (what ``weyl train`` calls with a validated config).
The names below load on first use, so that ``weyl train`` can reject a malformed override or
a broken recipe before paying for the torch import (~7 s on a busy 2-core machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weyl.train.runner import Factories, default_factories, run_training
    from weyl.train.signals import PREEMPTED_EXIT_CODE
    from weyl.train.trainer import Trainer, TrainerParts

_EXPORTS = {
    "PREEMPTED_EXIT_CODE": "weyl.train.signals",
    "Factories": "weyl.train.runner",
    "Trainer": "weyl.train.trainer",
    "TrainerParts": "weyl.train.trainer",
    "default_factories": "weyl.train.runner",
    "run_training": "weyl.train.runner",
}

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "Factories",
    "Trainer",
    "TrainerParts",
    "default_factories",
    "run_training",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'weyl.train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
