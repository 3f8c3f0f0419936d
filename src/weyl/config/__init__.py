"""The run's root config, composition with Hydra, the ``scale`` group, and the error type.

Each section's config lives beside the code that uses it (``weyl.models.model_config``,
``weyl.data.data_config``, ``weyl.optim.optim_config``, ``weyl.diagnostics.diagnostics_config``,
``weyl.train.train_config``); this package composes them into one :class:`TrainConfig`.
"""

from weyl.config.compose import build_config, compose_run, load_config, model_config
from weyl.config.run_config import TrainConfig
from weyl.value_checks import ConfigError

__all__ = [
    "ConfigError",
    "TrainConfig",
    "build_config",
    "compose_run",
    "load_config",
    "model_config",
]
