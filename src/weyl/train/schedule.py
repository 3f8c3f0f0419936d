"""Per-step learning-rate schedules: linear warmup (optional) then cosine decay or constant.

Conventions (``step`` = number of optimizer updates already taken, 0-based):
- warmup ``W > 0``: ``lr(s) = peak · (s + 1) / W`` for ``s < W`` — the first update already
  moves (no step is spent at lr = 0) and update ``W - 1`` runs at the peak;
- warmup ``W = 0`` is a first-class path: ``lr(0) = peak``;
- cosine: ``lr(s) = min + (peak - min) · ½(1 + cos(π · (s - W) / (T - W)))`` for ``W ≤ s ≤ T``,
  so the decay reaches ``min_lr`` exactly at ``s = T`` (after the last update, as in nanoGPT),
  and the last update is not wasted at ``min_lr``.

Each param group keeps its own peak in ``group["initial_lr"]`` (set once, saved with the
optimizer's state dict), so per-group LR multipliers survive: a group's LR is its peak times
the schedule's factor ``lr(s) / peak``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer

from weyl.train.train_config import ScheduleConfig, ScheduleName
from weyl.value_checks import one_of


@dataclass(frozen=True)
class LRSchedule:
    """A resolved schedule: peak/min LR, warmup and total length in optimizer steps."""

    name: ScheduleName | str
    peak_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        one_of(ScheduleName, self.name, "schedule.name")  # LRSchedule is usable on its own
        if self.total_steps <= 0:
            raise ValueError(f"trainer.max_steps={self.total_steps} must be > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"schedule.warmup_steps={self.warmup_steps} must be >= 0")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"schedule warmup ({self.warmup_steps} steps) must be shorter than the run "
                f"({self.total_steps} steps); lower schedule.warmup_steps/warmup_epochs"
            )
        if self.peak_lr <= 0:
            raise ValueError(f"optim.lr={self.peak_lr} must be > 0")
        if not 0 <= self.min_lr <= self.peak_lr:
            raise ValueError(
                f"schedule.min_lr={self.min_lr} must be in [0, optim.lr={self.peak_lr}]"
            )

    def lr(self, step: int) -> float:
        """Learning rate used for the update taken at 0-based ``step``."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.name == "constant":
            return self.peak_lr
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )

    def factor(self, step: int) -> float:
        """``lr(step) / peak``: the multiplier applied to every group's own peak."""
        return self.lr(step) / self.peak_lr

    def apply(self, optimizer: Optimizer, step: int) -> float:
        """Set ``group["lr"]`` of every param group for ``step``; returns the base-group LR."""
        f = self.factor(step)
        for group in optimizer.param_groups:
            peak = group.setdefault("initial_lr", group["lr"])
            group["lr"] = peak * f
        return self.peak_lr * f


def warmup_steps_from_config(
    warmup_steps: int, warmup_epochs: float, *, samples_per_epoch: int, global_batch_size: int
) -> int:
    """Warmup length in optimizer steps; ``warmup_epochs`` wins when > 0."""
    if warmup_steps > 0 and warmup_epochs > 0:
        raise ValueError(
            "schedule.warmup_steps and schedule.warmup_epochs are both set; keep only one"
        )
    if warmup_epochs <= 0:
        return int(warmup_steps)
    if samples_per_epoch <= 0:
        raise ValueError("schedule.warmup_epochs needs a data set with a known size per epoch")
    return round(warmup_epochs * samples_per_epoch / global_batch_size)


def build_schedule(
    schedule_cfg: ScheduleConfig,
    *,
    peak_lr: float,
    total_steps: int,
    samples_per_epoch: int,
    global_batch_size: int,
) -> LRSchedule:
    """Resolve a ``ScheduleConfig`` (steps or epochs) into an :class:`LRSchedule`."""
    warmup = warmup_steps_from_config(
        schedule_cfg.warmup_steps,
        schedule_cfg.warmup_epochs,
        samples_per_epoch=samples_per_epoch,
        global_batch_size=global_batch_size,
    )
    return LRSchedule(
        name=schedule_cfg.name,
        peak_lr=peak_lr,
        min_lr=schedule_cfg.min_lr,
        warmup_steps=warmup,
        total_steps=total_steps,
    )
