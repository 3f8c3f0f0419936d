"""The trainer: one loop for every model family, launched as 1 process, torchrun or Slurm.

Entry point: :func:`run_training` (what ``weyl train`` calls with a validated config).
"""

from weyl.train.runner import Factories, default_factories, run_training
from weyl.train.signals import PREEMPTED_EXIT_CODE
from weyl.train.trainer import Trainer, TrainerParts

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "Factories",
    "Trainer",
    "TrainerParts",
    "default_factories",
    "run_training",
]
