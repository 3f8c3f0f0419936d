"""Per-step learning-rate schedules: a linear warmup (optional), then cosine decay or constant.

A schedule is a pure function of the step, so a resumed run replays the same LR sequence.
Notation: ``s`` = optimizer updates already taken (0-based), ``W`` = warmup steps, ``P`` = peak
(``optim.lr``), ``m`` = ``min_lr``, ``w0`` = ``warmup_lr_init``, ``D`` = ``decay_steps`` (the run's
length ``T`` when null), ``cos½(x) = ½(1 + cos(π·min(1, x)))``.

``warmup_shape`` (``W = 0`` is a first-class path in every shape: ``lr(0) = P``):

- ``restart`` (weyl's own, the default): ``lr(s) = w0 + (P - w0)·(s + 1)/W`` for ``s < W`` (the
  first update already moves; update ``W - 1`` runs at the peak), then
  ``m + (P - m)·cos½((s - W)/(D - W))``: the cosine restarts at the end of the warmup and
  reaches ``m`` at ``s = D``. From step ``W`` on this equals timm's ``CosineLRScheduler(
  warmup_prefix=True, t_initial=T - W)``; timm's ramp is one step behind (``w0 + (P - w0)·s/W``).
- ``overlap`` (timm's ``CosineLRScheduler`` without ``warmup_prefix``, ``t_in_epochs=False``):
  ``lr(s) = w0 + (P - w0)·s/W`` for ``s < W``, then ``m + (P - m)·cos½(s/D)``: the cosine runs
  over the whole training from step 0 and the warmup covers its start, so the LR after the
  warmup is already below the peak. The official Swin-Transformer and FLatten-Transformer code
  (``build_scheduler``; Swin's ``WARMUP_PREFIX`` defaults to False) and timm's ``train.py``
  without ``--warmup-prefix`` use it. Swin's loop calls ``step_update(i)`` after update ``i``, so
  its update ``i + 1`` runs at timm's ``t = i`` (one step later than here and in timm's
  ``train.py``, which steps with the number of updates done).
- ``nanogpt`` (nanoGPT's ``get_lr``): ``lr(s) = w0 + (P - w0)·(s + 1)/(W + 1)`` for ``s < W``
  (nanoGPT has ``w0 = 0``), then ``m + (P - m)·cos½((s - W)/(D - W))`` as ``restart``. It
  differs from ``restart`` only in the ramp, by at most ``P/(W + 1)`` (0.05% of the peak at
  nanoGPT's 2000 steps).

Which recipe family uses which (``recipes/table2/*.yaml``): GPT (nanoGPT's setup, Appendix N
and K) ``nanogpt`` with ``decay_steps`` = nanoGPT's ``lr_decay_iters`` (600K, so GPT-L stops
at 100K of a 600K decay); Swin, FLatten-Swin and ViT (their official code / timm's
``train.py``) ``overlap`` with the code base's warmup start LR; the CPU and smoke recipes
``restart``. Without warmup (every AdamW² run) the three shapes are the same cosine.

Each param group keeps its own peak in ``group["initial_lr"]`` (set once, saved with the
optimizer's state dict), so per-group LR multipliers survive: a group's LR is its peak times
the schedule's factor ``lr(s) / P`` (``w0`` scales with it; timm starts every group from the
same absolute ``w0``, which is the same thing when all groups share the peak, as in every
recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer

from weyl.train.train_config import ScheduleConfig, ScheduleName, WarmupShape
from weyl.value_checks import one_of


@dataclass(frozen=True)
class LRSchedule:
    """A resolved schedule: peak/min LR, warmup, run and decay length in optimizer steps."""

    name: ScheduleName | str
    peak_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    decay_steps: int | None = None
    warmup_lr_init: float = 0.0
    warmup_shape: WarmupShape | str = WarmupShape.restart

    def __post_init__(self) -> None:
        one_of(ScheduleName, self.name, "schedule.name")  # LRSchedule is usable on its own
        one_of(WarmupShape, self.warmup_shape, "schedule.warmup_shape")
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
        if not 0 <= self.warmup_lr_init <= self.peak_lr:
            raise ValueError(
                f"schedule.warmup_lr_init={self.warmup_lr_init} must be in "
                f"[0, optim.lr={self.peak_lr}]"
            )
        decay_from = 0 if self.warmup_shape == WarmupShape.overlap else self.warmup_steps
        if self.decay_steps is not None and self.decay_steps <= decay_from:
            raise ValueError(
                f"schedule.decay_steps={self.decay_steps} must be > {decay_from} (the step the "
                f"{self.warmup_shape} decay starts at); raise it or set null (the run's length)"
            )

    @property
    def decay_end(self) -> int:
        """The step at which the decay reaches ``min_lr``."""
        return self.total_steps if self.decay_steps is None else self.decay_steps

    def lr(self, step: int) -> float:
        """Learning rate used for the update taken at 0-based ``step``."""
        w, w0, peak = self.warmup_steps, self.warmup_lr_init, self.peak_lr
        if step < w:
            if self.warmup_shape == WarmupShape.overlap:
                return w0 + (peak - w0) * step / w
            if self.warmup_shape == WarmupShape.nanogpt:
                return w0 + (peak - w0) * (step + 1) / (w + 1)
            return w0 + (peak - w0) * (step + 1) / w
        if self.name == "constant":
            return peak
        start = 0 if self.warmup_shape == WarmupShape.overlap else w
        progress = min(1.0, (step - start) / (self.decay_end - start))
        return self.min_lr + (peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

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
        decay_steps=schedule_cfg.decay_steps,
        warmup_lr_init=schedule_cfg.warmup_lr_init,
        warmup_shape=schedule_cfg.warmup_shape,
    )
