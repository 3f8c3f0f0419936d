"""The root config of one run, and the checks that read more than one section.

Each section checks its own values when it is built (``OptimConfig.__post_init__``, ...); what
only the whole run can check — the data fits the model, the warmup is shorter than the run,
``min_lr`` is at most ``optim.lr`` — is checked here, after the sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from weyl.data.data_config import TextDataConfig
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models.model_config import GPTModelConfig
from weyl.optim.optim_config import OptimConfig
from weyl.train.train_config import LoggerConfig, ScheduleConfig, TrainerConfig
from weyl.value_checks import ConfigError, require


@dataclass
class TrainConfig:
    """Everything one run needs; ``model`` / ``data`` hold the config of their family / kind."""

    name: str = "run"
    run_dir: str = "runs/${name}"
    seed: int = 0
    model: Any = field(default_factory=GPTModelConfig)
    data: Any = field(default_factory=TextDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)

    def __post_init__(self) -> None:
        require(bool(self.name), "name", "must be a non-empty run name")
        require(bool(self.run_dir), "run_dir", "must be a non-empty path")
        model, data, trainer, schedule = self.model, self.data, self.trainer, self.schedule
        # By the keys a family has, not its name: a new family needs no entry here.
        if data.kind == "text":
            if not (hasattr(model, "vocab_size") and hasattr(model, "block_size")):
                raise ConfigError(
                    "data.kind: text data needs a language model (one with model.vocab_size and "
                    f"model.block_size, e.g. gpt), got model.family={model.family}"
                )
            require(
                data.block_size <= model.block_size,
                "data.block_size",
                f"must be <= model.block_size={model.block_size}, got {data.block_size}",
            )
        elif not hasattr(model, "num_classes"):
            raise ConfigError(
                f"data.kind: {data.kind} data needs an image classifier (one with "
                f"model.num_classes, e.g. vit, swin), got model.family={model.family}"
            )
        if trainer.epochs <= 0:
            require(
                schedule.warmup_steps < trainer.max_steps,
                "schedule.warmup_steps",
                f"must be < trainer.max_steps={trainer.max_steps}, got {schedule.warmup_steps}",
            )
            # the overlap cosine starts at step 0; the other shapes' at the warmup's end
            decay_from = 0 if schedule.warmup_shape == "overlap" else schedule.warmup_steps
            require(
                schedule.decay_steps is None or schedule.decay_steps > decay_from,
                "schedule.decay_steps",
                f"must be > {decay_from} (the step the {schedule.warmup_shape} decay starts "
                f"at) or null, got {schedule.decay_steps}",
            )
        require(
            schedule.min_lr <= self.optim.lr,
            "schedule.min_lr",
            f"must be in [0, optim.lr={self.optim.lr}], got {schedule.min_lr}",
        )
        require(
            schedule.warmup_lr_init <= self.optim.lr,
            "schedule.warmup_lr_init",
            f"must be in [0, optim.lr={self.optim.lr}], got {schedule.warmup_lr_init}",
        )


@dataclass
class ComposedConfig(TrainConfig):
    """What Hydra composes (``train_schema`` in its ConfigStore): a :class:`TrainConfig` whose
    ``model`` / ``data`` come typed from their group file, plus the ``scale`` and ``method``
    nodes that are applied and removed before the run is built."""

    model: Any = MISSING
    data: Any = MISSING
    scale: Any = None
    # The recipe's per-model values that a method overlay (configs/method/) reads; resolved into
    # the run's own keys and dropped by weyl.config.compose.to_plain.
    method: Any = None
