"""The configs of the training loop's parts: schedule, trainer, loggers (no torch import here).

Each checks its own values in ``__post_init__``; checks across sections (the warmup shorter
than the run, ``min_lr`` at most ``optim.lr``) belong to the run's root config,
:class:`weyl.config.TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from weyl.value_checks import one_of, require


class ScheduleName(StrEnum):
    """``cosine`` (decay to min_lr) or ``constant``, after the optional linear warmup."""

    cosine = "cosine"
    constant = "constant"


class WarmupShape(StrEnum):
    """How the warmup ramp and the decay share the run; formulas in :mod:`weyl.train.schedule`."""

    restart = "restart"  # ramp peak·(s+1)/W, then the decay starts at step W (weyl's own)
    overlap = "overlap"  # timm CosineLRScheduler without warmup_prefix (Swin, FLatten, timm)
    nanogpt = "nanogpt"  # nanoGPT's get_lr: ramp peak·(s+1)/(W+1), decay from step W


class Precision(StrEnum):
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Strategy(StrEnum):
    """``ddp`` or ``fsdp`` (FSDP2 fully_shard per block); ignored in a single process."""

    ddp = "ddp"
    fsdp = "fsdp"


class CrashAction(StrEnum):
    """What the crash guard does on a non-finite or diverging loss."""

    stop = "stop"
    rollback = "rollback"


class WandbMode(StrEnum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class ConsoleMode(StrEnum):
    """``auto`` (the bar on a terminal, plain lines otherwise, e.g. a Slurm .out), ``lines``
    (plain lines always) or ``off``."""

    auto = "auto"
    lines = "lines"
    off = "off"


@dataclass
class ScheduleConfig:
    name: ScheduleName = ScheduleName.cosine
    warmup_steps: int = 0
    # Alternative to warmup_steps for epoch-based recipes (converted with steps per epoch).
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    # The step at which the decay reaches min_lr (nanoGPT's lr_decay_iters); null = the run's
    # length. Shorter: min_lr from there on; longer: the run stops part-way down the decay.
    decay_steps: int | None = None
    # The LR the warmup ramps up from (timm's warmup_lr_init, Swin's WARMUP_LR); 0 = from zero.
    warmup_lr_init: float = 0.0
    warmup_shape: WarmupShape = WarmupShape.restart

    def __post_init__(self) -> None:
        self.name = one_of(ScheduleName, self.name, "schedule.name")
        self.warmup_shape = one_of(WarmupShape, self.warmup_shape, "schedule.warmup_shape")
        require(
            self.warmup_steps >= 0,
            "schedule.warmup_steps",
            f"must be >= 0, got {self.warmup_steps}",
        )
        require(
            self.warmup_epochs >= 0,
            "schedule.warmup_epochs",
            f"must be >= 0, got {self.warmup_epochs}",
        )
        require(
            not (self.warmup_steps and self.warmup_epochs),
            "schedule.warmup_epochs",
            "set either schedule.warmup_steps or schedule.warmup_epochs, not both",
        )
        require(self.min_lr >= 0, "schedule.min_lr", f"must be >= 0, got {self.min_lr}")
        require(
            self.decay_steps is None or self.decay_steps >= 1,
            "schedule.decay_steps",
            f"must be >= 1 or null (the run's length), got {self.decay_steps}",
        )
        require(
            self.warmup_lr_init >= 0,
            "schedule.warmup_lr_init",
            f"must be >= 0, got {self.warmup_lr_init}",
        )


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    # Epoch-based recipes set epochs > 0; max_steps is then derived from the data size.
    epochs: float = 0.0
    global_batch_size: int = 32
    # Per-process micro batch; 0 = global_batch_size / world_size (no accumulation).
    micro_batch_size: int = 0
    grad_clip: float = 0.0
    precision: Precision = Precision.auto
    compile: bool = False
    # "auto", "cpu", "cuda" or "cuda:N"
    device: str = "auto"
    strategy: Strategy = Strategy.ddp
    eval_every: int = 250
    eval_batches: int = 20
    log_every: int = 10
    ckpt_every: int = 250
    keep_last: int = 2
    # Write checkpoints in a background thread: training waits only while the shards are copied
    # to a CPU staging buffer (torch.distributed.checkpoint.async_save); same files as sync.
    checkpoint_async: bool = False
    # "auto" (continue the run in run_dir if its config is the same), "force" (continue it
    # even if trajectory keys changed), "never" (start fresh; the old run is moved aside), or a
    # checkpoint path. See weyl.train.launch.
    resume: str = "auto"
    # Crash guard: stop (or roll back) on non-finite loss/grad or a loss spike.
    spike_window: int = 50
    spike_factor: float = 3.0
    # From step 1: stop when the loss exceeds this factor × the loss at initialisation, ln(vocab)
    # for LM or ln(classes) for classification; 0 disables. Measured in the first steps of
    # healthy runs: GPT <= 1.08x; every paper recipe at toy scale <= 2.94x (ViT-L, 3 classes,
    # batch 4); AdamW at lr=1 on smoke/gpt_tiny peaks at 3.8x and recovers; at lr=10, 226x.
    divergence_factor: float = 10.0
    on_crash: CrashAction = CrashAction.stop
    # Rollbacks allowed before a run that keeps diverging is stopped (on_crash: rollback).
    max_rollbacks: int = 3
    # Under Slurm, rank 0 requeues the job after a preemption signal (SIGUSR1/2, SIGTERM).
    requeue: bool = True
    ema: bool = False
    # PaLM's z-loss: coefficient × mean log²Z of the LM head's logits, added to the training
    # objective only (the logged and eval loss stay the cross-entropy); PaLM's 1e-4 when on.
    z_loss: float = 0.0

    def __post_init__(self) -> None:
        self.precision = one_of(Precision, self.precision, "trainer.precision")
        self.strategy = one_of(Strategy, self.strategy, "trainer.strategy")
        self.on_crash = one_of(CrashAction, self.on_crash, "trainer.on_crash")
        require(
            self.max_steps > 0 or self.epochs > 0,
            "trainer.max_steps",
            f"must be > 0 (or set trainer.epochs), got {self.max_steps}",
        )
        require(self.epochs >= 0, "trainer.epochs", f"must be >= 0, got {self.epochs}")
        for key in ("global_batch_size", "eval_every", "log_every", "ckpt_every", "keep_last"):
            value = getattr(self, key)
            require(value > 0, f"trainer.{key}", f"must be > 0, got {value}")
        # spike_window 0 turns the spike test off (see weyl.train.crash_guard.CrashGuard).
        for key in ("micro_batch_size", "eval_batches", "max_rollbacks", "spike_window"):
            value = getattr(self, key)
            require(value >= 0, f"trainer.{key}", f"must be >= 0, got {value}")
        require(
            self.grad_clip >= 0,
            "trainer.grad_clip",
            f"must be >= 0 (0 disables), got {self.grad_clip}",
        )
        require(
            not self.ema,
            "trainer.ema",
            "EMA of weights is not implemented yet; set trainer.ema=false",
        )
        require(
            self.z_loss >= 0,
            "trainer.z_loss",
            f"must be >= 0 (0 disables; PaLM uses 1e-4), got {self.z_loss}",
        )
        require(
            self.spike_factor > 1.0, "trainer.spike_factor", f"must be > 1, got {self.spike_factor}"
        )
        require(
            self.divergence_factor == 0 or self.divergence_factor > 1.0,
            "trainer.divergence_factor",
            f"must be > 1 (or 0 to disable), got {self.divergence_factor}",
        )
        require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "trainer.device",
            f"unknown '{self.device}'; choose auto, cpu, cuda or cuda:N",
        )
        require(
            bool(self.resume), "trainer.resume", "choose auto, force, never or a checkpoint path"
        )


@dataclass
class WandbConfig:
    enabled: bool = False
    # null: the WANDB_MODE environment variable, else offline; a value here wins over both.
    mode: WandbMode | None = None
    project: str = "weyl"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    name: str | None = None

    def __post_init__(self) -> None:
        if self.mode is not None:
            self.mode = one_of(WandbMode, self.mode, "logger.wandb.mode")


@dataclass
class LoggerConfig:
    # The rich progress bar on a terminal (under console: auto).
    progress: bool = True
    # Human-readable log on stdout (see ConsoleMode).
    console: ConsoleMode = ConsoleMode.auto
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self) -> None:
        self.console = one_of(ConsoleMode, self.console, "logger.console")
