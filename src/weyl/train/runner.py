"""``run_training(cfg)``: set up distributed, build everything through the factories, train.

Order matters in two places:
- the optimizer is built on the *unwrapped* model before DDP (AdamW² keys its per-tensor rules
  on parameter names), but *after* FSDP2's ``fully_shard`` (whose parameters become DTensors;
  ``fully_shard`` keeps the names);
- every rank seeds identically before ``build_model`` (FSDP2 does not broadcast initial
  weights), then reseeds per rank for the training stream (dropout, augmentation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from weyl.config import TrainConfig
from weyl.train import fault_injection
from weyl.train.checkpoint import CheckpointManager
from weyl.train.console_log import ConsoleLog, banner_lines
from weyl.train.distributed import DistContext, init_distributed, shutdown_distributed
from weyl.train.exit_codes import ERROR, INTERRUPTED
from weyl.train.loggers import JsonlLogger, MetricLoggers, WandbLogger
from weyl.train.model_wrapping import unwrap_model, wrap_model
from weyl.train.run_status import write_status
from weyl.train.schedule import build_schedule
from weyl.train.task import build_task
from weyl.train.throughput import peak_flops, training_flops_per_sample
from weyl.train.trainer import Trainer, TrainerParts

log = logging.getLogger(__name__)


@dataclass
class Factories:
    """The builders ``run_training`` uses; tests and users may swap any of them."""

    build_model: Callable[[Any], nn.Module]
    build_data: Callable[..., Any]
    build_optimizer: Callable[[nn.Module, Any], torch.optim.Optimizer]
    # Diagnostics(model, diagnostics_cfg, probe_inputs, loss_fn(model) -> loss), .compute(optimizer)
    build_diagnostics: Callable[..., Any] | None = None


def default_factories() -> Factories:
    """weyl's own model, data, optimizer and diagnostics factories."""
    from weyl.data import build_data
    from weyl.diagnostics import Diagnostics
    from weyl.models import build_model
    from weyl.optim import build_optimizer

    return Factories(build_model, build_data, build_optimizer, Diagnostics)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_geometry(global_batch: int, micro_batch: int, world_size: int) -> tuple[int, int]:
    """(micro batch per rank, accumulation steps) for a global batch over ``world_size`` ranks."""
    micro = micro_batch or global_batch // world_size
    if micro <= 0 or global_batch % (micro * world_size) != 0:
        raise ValueError(
            f"trainer.global_batch_size={global_batch} is not a multiple of micro_batch_size "
            f"({micro}) x world size ({world_size}); set trainer.micro_batch_size to a divisor"
        )
    return micro, global_batch // (micro * world_size)


def total_steps_for(cfg: TrainConfig, samples_per_epoch: int) -> int:
    """``trainer.max_steps``, or ``epochs`` converted to updates when ``epochs`` > 0."""
    t = cfg.trainer
    if t.epochs > 0:
        if samples_per_epoch <= 0:
            raise ValueError(
                "trainer.epochs needs a data set with a known size; set trainer.max_steps"
            )
        return max(1, math.ceil(t.epochs * samples_per_epoch / t.global_batch_size))
    return t.max_steps


def resolve_resume(resume: str, ckpt: CheckpointManager) -> Path | None:
    """``auto``/``force`` → newest checkpoint that verifies and loads (or None; damaged newer
    ones are in ``ckpt.skipped``), ``never`` → None, else that path.

    (:mod:`weyl.train.launch` has already checked what ``auto`` may continue.)
    """
    if resume == "never":
        return None
    if resume in ("auto", "force"):
        return ckpt.load_newest_good()
    path = Path(resume)
    if not path.is_dir():
        raise ValueError(
            f"trainer.resume={resume!r} does not exist; use auto, force, never or a checkpoint dir"
        )
    return path


def _flops_per_unit(
    model: nn.Module, task_unit: str, probe: torch.Tensor, device: torch.device
) -> float | None:
    """Training FLOPs per token or image for MFU; ``None`` where MFU is not reported (CPU)."""
    if peak_flops(device) is None:
        return None
    sample = probe[:1].to(device)
    per_sample = training_flops_per_sample(model, sample)
    return per_sample / sample.shape[-1] if task_unit == "tokens" else per_sample


def _diagnostics_fn(
    cfg: TrainConfig,
    ctx: DistContext,
    factories: Factories,
    raw: nn.Module,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Any,
    loss_fn: Callable,
    fsdp: bool,
) -> Callable[[], dict[str, float]] | None:
    if not cfg.diagnostics.enabled or factories.build_diagnostics is None:
        return None
    probe_x, probe_y = (t.to(ctx.device) for t in data.probe)

    def probe_loss(m: nn.Module) -> torch.Tensor:
        return loss_fn(m(probe_x), probe_y)

    if not fsdp:
        if not ctx.is_main:
            return lambda: {}
        diag = factories.build_diagnostics(raw, cfg.diagnostics, probe_x, probe_loss)
        return lambda: diag.compute(optimizer=optimizer)

    # FSDP2 shards every weight: rank 0 reads a full-weight twin synced before each compute.
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    twin = factories.build_model(cfg.model).to(ctx.device) if ctx.is_main else None
    diag = (
        factories.build_diagnostics(twin, cfg.diagnostics, probe_x, probe_loss)
        if twin is not None
        else None
    )

    def compute() -> dict[str, float]:
        full = get_model_state_dict(
            wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if twin is None:
            return {}
        twin.load_state_dict(full)
        return diag.compute(optimizer=optimizer)

    return compute


def _lr_view(
    cfg: TrainConfig, ctx: DistContext, factories: Factories, raw: nn.Module, optimizer: Any
) -> Callable[[dict[str, dict[str, float]]], dict[str, float]] | None:
    """Fig. 15's per-tensor LR view on rank 0, when diagnostics and ``lr_every`` are on and the
    optimizer records clipped LRs (the names of ``raw`` are those of an FSDP2-sharded model)."""
    diag = cfg.diagnostics
    on = diag.enabled and diag.lr_every > 0 and factories.build_diagnostics is not None
    if not (on and ctx.is_main and callable(getattr(optimizer, "lr_report", None))):
        return None
    from weyl.diagnostics.optimizer_view import TensorLRView
    from weyl.models.attention_view import attention_views

    return TensorLRView(raw, attention_views(raw), diag.lr_layers)


def check_data_fits_model(cfg: TrainConfig, data: Any) -> None:
    """The model's vocabulary / class count must cover the data's (one-line error otherwise)."""
    vocab = getattr(cfg.model, "vocab_size", None)
    if data.vocab_size is not None and vocab is not None and data.vocab_size > vocab:
        raise ValueError(
            f"model.vocab_size={vocab} is smaller than the vocabulary of data.tokenizer="
            f"{cfg.data.tokenizer} ({data.vocab_size} tokens); set model.vocab_size >= {data.vocab_size}"
        )
    classes = getattr(cfg.model, "num_classes", None)
    if data.num_classes is not None and classes is not None and data.num_classes != classes:
        raise ValueError(
            f"model.num_classes={classes} but data set {cfg.data.name} has {data.num_classes} "
            f"classes; set model.num_classes={data.num_classes}"
        )


def failure_status(err: BaseException, second_ctrl_c: bool) -> tuple[str, str]:
    """(run state, reason) for an exception that ended a run: ``interrupted`` for Ctrl-C,
    ``failed`` for anything else (``crashed`` is kept for a diverging loss)."""
    if isinstance(err, KeyboardInterrupt):
        if second_ctrl_c:
            return "interrupted", "second Ctrl-C: stopped at once, without a checkpoint"
        return "interrupted", "Ctrl-C during set-up"
    message = str(err).splitlines()[0] if str(err) else ""
    return "failed", f"{type(err).__name__}: {message}" if message else type(err).__name__


def run_training(
    cfg: TrainConfig,
    *,
    factories: Factories | None = None,
    requeue: bool | None = None,
    max_rollbacks: int | None = None,
    launch_events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` to completion, crash, preemption or Ctrl-C and return the run summary.

    ``summary["exit_code"]`` is the outcome's code from :mod:`weyl.train.exit_codes`: 0
    finished, 4 crashed (diverged), 3 preempted, 130 interrupted. An exception propagates after
    status.json records it (``interrupted`` for a KeyboardInterrupt, else ``failed``).
    ``requeue`` (default ``cfg.trainer.requeue``) makes rank 0 ``scontrol requeue`` the job
    after a preemption signal — only under Slurm (``SLURM_JOB_ID`` set), where
    slurm/train.sbatch relies on it. ``max_rollbacks`` defaults to ``cfg.trainer.max_rollbacks``.
    ``launch_events`` (e.g. a forced config change) are logged at the start step.
    """
    factories = factories or default_factories()
    fault_injection.install_from_env()
    ctx = init_distributed(cfg.trainer.device)
    run_dir = Path(cfg.run_dir)
    loggers = MetricLoggers()
    trainer: Trainer | None = None
    try:
        micro, accum = batch_geometry(
            cfg.trainer.global_batch_size, cfg.trainer.micro_batch_size, ctx.world_size
        )
        seed_everything(cfg.seed)
        raw = factories.build_model(cfg.model).to(ctx.device)
        data = factories.build_data(
            cfg.data,
            batch_size=micro,
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=cfg.seed,
            probe_batch_size=cfg.diagnostics.probe_batch_size,
        )
        check_data_fits_model(cfg, data)
        task = build_task(
            data.task, label_smoothing=data.label_smoothing, z_loss=cfg.trainer.z_loss
        )
        total = total_steps_for(cfg, data.samples_per_epoch)
        fsdp = ctx.is_distributed and cfg.trainer.strategy == "fsdp"
        if fsdp:
            wrapped = wrap_model(raw, ctx, "fsdp")
            optimizer = factories.build_optimizer(wrapped, cfg.optim)
        else:
            optimizer = factories.build_optimizer(raw, cfg.optim)
            wrapped = wrap_model(raw, ctx, cfg.trainer.strategy)
        model = torch.compile(wrapped) if cfg.trainer.compile else wrapped
        schedule = build_schedule(
            cfg.schedule,
            peak_lr=cfg.optim.lr,
            total_steps=total,
            samples_per_epoch=data.samples_per_epoch,
            global_batch_size=cfg.trainer.global_batch_size,
        )
        ckpt = CheckpointManager(
            run_dir / "checkpoints",
            ctx,
            cfg.trainer.keep_last,
            async_save=cfg.trainer.checkpoint_async,
        )
        parts = TrainerParts(
            cfg=cfg,
            ctx=ctx,
            model=model,
            optimizer=optimizer,
            data=data,
            task=task,
            schedule=schedule,
            total_steps=total,
            accum_steps=accum,
            checkpoints=ckpt,
            loggers=loggers,
            diagnostics=_diagnostics_fn(
                cfg, ctx, factories, raw, wrapped, optimizer, data, task.loss, fsdp
            ),
            flops_per_unit=_flops_per_unit(raw, task.unit, data.probe[0], ctx.device),
            max_rollbacks=cfg.trainer.max_rollbacks if max_rollbacks is None else max_rollbacks,
            requeue=cfg.trainer.requeue if requeue is None else requeue,
            eval_model=None if fsdp else unwrap_model(raw),
            lr_view=_lr_view(cfg, ctx, factories, raw, optimizer),
        )
        trainer = Trainer(parts)
        # The training stream differs per rank (dropout, augmentation); weights do not.
        seed_everything(cfg.seed + 1_000_003 * ctx.rank)
        resume_from = resolve_resume(cfg.trainer.resume, ckpt)
        if resume_from is not None:
            step = trainer.restore(resume_from)
            if ctx.is_main:
                log.info("resumed from %s at step %d", resume_from, step)
        if ctx.is_main:
            resume_step = trainer.step if resume_from is not None else None
            loggers.jsonl = JsonlLogger(run_dir / "metrics.jsonl", resume_step)
            for event in launch_events or []:
                loggers.jsonl.log({"step": trainer.step, **event})
            for skipped in ckpt.skipped:
                loggers.jsonl.log(
                    {
                        "step": trainer.step,
                        "event": "checkpoint_skipped",
                        "path": str(skipped.path),
                        "checkpoint_step": skipped.step,
                        "reason": skipped.reason,
                    }
                )
            loggers.console = ConsoleLog(
                cfg.logger.console, total, trainer.step, task.unit, progress=cfg.logger.progress
            )
            loggers.console.banner(
                banner_lines(
                    cfg,
                    model=raw,
                    world_size=ctx.world_size,
                    device=ctx.device,
                    autocast_dtype=trainer.autocast_dtype,
                    total_steps=total,
                    micro_batch=micro,
                    accum_steps=accum,
                    unit=task.unit,
                    resume_step=resume_step,
                )
            )
            for event in launch_events or []:
                loggers.console.log({"step": trainer.step, **event})
            if cfg.logger.wandb.enabled:
                loggers.wandb = WandbLogger(
                    cfg.logger.wandb, run_dir, dataclasses.asdict(cfg), parts.wandb_run_id
                )
                parts.wandb_run_id = loggers.wandb.run_id
        fault_injection.hooks.after_setup()
        summary = trainer.fit()
        if loggers.console is not None:
            loggers.console.summary(summary)
        loggers.close(exit_code=summary["exit_code"])
        return summary
    except BaseException as err:
        if ctx.is_main and run_dir.is_dir():
            step = trainer.step if trainer is not None else 0
            # A KeyboardInterrupt after the loop's handler saw a first Ctrl-C is the second one.
            second = trainer is not None and trainer.preemption.interrupted_at is not None
            state, reason = failure_status(err, second)
            # On a full or read-only disk this write fails too; start_run reports that one line.
            with contextlib.suppress(Exception):  # must not mask the original error
                write_status(run_dir, state, step, reason)
            if loggers.console is not None and trainer is not None:
                code = INTERRUPTED if isinstance(err, KeyboardInterrupt) else ERROR
                with contextlib.suppress(Exception):
                    loggers.console.summary(trainer.summary(state, exit_code=code, reason=reason))
        with contextlib.suppress(BaseException):  # must not mask the original error
            loggers.close(exit_code=1)
        raise
    finally:
        shutdown_distributed(ctx)
