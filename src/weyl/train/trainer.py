"""The training loop: one trainer for language modelling and image classification.

Per update: ``accum_steps`` micro batches (DDP ``no_sync`` / FSDP2 gradient sync off on all but
the last), loss and grad norm averaged across ranks in one small device all-reduce, the crash
guard's verdict on the device, then ``optimizer.step()``. Eval, diagnostics and checkpoints run
at step boundaries inside a forked RNG, so they never change the training random stream: a
resumed run replays the exact same updates.

Host syncs. When the optimizer takes a ``found_inf`` flag (torch's fused Adam/AdamW, which
``build_optimizer`` makes on CUDA), an update costs no host sync: the guard's sticky device
flag makes the optimizer skip a flagged update and all later ones, and the host reads the
verdict, the loss and the stop flags only at *sync steps* (log, eval, diagnostics and
checkpoint steps, the last step, and a step at which this process was signalled). A crash at
update N is then handled at the first sync step S ≥ N exactly as if it had been seen at N (same
step, reason, weights, checkpoints); what it costs is the S − N forward/backward passes
computed in between and discarded, and their batches (a rollback continues after them). Other
optimizers (AdamW², foreach AdamW on a CPU) read loss and grad norm before every ``step()``
(one host sync per update) and the guard's rule runs on those host floats. Under
DDP/FSDP the stop flags (preemption, Ctrl-C) travel at sync steps only, so a signal takes
effect at the next one.

``step`` always counts completed optimizer updates; the log line for step ``N`` holds the loss
of the ``N``-th update (computed on the weights before it).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from weyl.config import TrainConfig
from weyl.data.token_blocks import stream_seed
from weyl.diagnostics.optimizer_view import clip_active, lr_summary
from weyl.train import fault_injection
from weyl.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_model_optimizer_state,
    rng_state,
    set_rng_state,
)
from weyl.train.crash_guard import (
    Crash,
    CrashGuard,
    DeviceCrashGuard,
    HostCrashGuard,
    divergence_bound_for,
)
from weyl.train.distributed import DistContext
from weyl.train.exit_codes import CRASHED, INTERRUPTED
from weyl.train.launcher_watch import dead_launcher
from weyl.train.loggers import MetricLoggers
from weyl.train.model_wrapping import is_fsdp, unwrap_compiled
from weyl.train.run_status import write_status
from weyl.train.schedule import LRSchedule
from weyl.train.sharded_state import sharded_state_dict
from weyl.train.signals import PREEMPTED_EXIT_CODE, PreemptionFlag, requeue_slurm_job, slurm_job_id
from weyl.train.task import Task
from weyl.train.throughput import peak_flops, peak_memory_gib

log = logging.getLogger(__name__)

DiagnosticsFn = Callable[[], dict[str, float]]
LRViewFn = Callable[[dict[str, dict[str, float]]], dict[str, float]]


@dataclass
class TrainerParts:
    """Everything the loop needs, built by :func:`weyl.train.runner.run_training`."""

    cfg: TrainConfig
    ctx: DistContext
    model: nn.Module  # possibly wrapped (DDP / FSDP2 / compiled)
    optimizer: Optimizer
    data: Any  # weyl.data.bundle.DataBundle
    task: Task
    schedule: LRSchedule
    total_steps: int
    accum_steps: int
    checkpoints: CheckpointManager
    loggers: MetricLoggers
    # Called on every rank at diagnostics steps; returns metrics on rank 0 ({} elsewhere).
    diagnostics: DiagnosticsFn | None = None
    flops_per_unit: float | None = None
    wandb_run_id: str | None = None
    max_rollbacks: int = 3
    requeue: bool = False
    # Hands the model the trainer forwards through in eval (the raw module under DDP).
    eval_model: nn.Module | None = None
    # Rank 0: optimizer.lr_report() → Fig. 15's per-tensor keys, every diagnostics.lr_every
    # steps (weyl.diagnostics.optimizer_view.TensorLRView); None elsewhere or when off.
    lr_view: LRViewFn | None = None


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without consuming the training RNG streams (python, numpy, torch, cuda)."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


class Trainer:
    """Runs updates from the current step to ``total_steps``; see the module docstring."""

    def __init__(self, parts: TrainerParts) -> None:
        self.p = parts
        cfg = parts.cfg.trainer
        self.cfg = cfg
        self.ctx = parts.ctx
        self.device = parts.ctx.device
        bound, origin = divergence_bound_for(cfg.divergence_factor, parts.cfg.model, parts.data)
        rules = CrashGuard(cfg.spike_window, cfg.spike_factor, bound, origin)
        # torch's AMP protocol: such an optimizer reads `found_inf` and skips the update on the
        # device when it is 1, so the guard's verdict need not reach the host before step().
        self.skips_on_device = bool(getattr(parts.optimizer, "_step_supports_amp_scaling", False))
        self.guard: DeviceCrashGuard | HostCrashGuard = (
            DeviceCrashGuard(rules, self.device) if self.skips_on_device else HostCrashGuard(rules)
        )
        self.step = 0
        self.best: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.last_loss: float | None = None
        self.rollbacks = 0
        self.elapsed_before = 0.0  # wall time of earlier processes of this run
        self.fsdp = is_fsdp(parts.model)
        self.preemption = PreemptionFlag()
        self.autocast_dtype = self._autocast_dtype(cfg.precision)
        self._t_start = time.time()
        self._last_saved_step = -1
        # Hot-path caches: walking the module tree costs ~1 ms a step on a small model.
        self._params = list(parts.model.parameters())
        inner = unwrap_compiled(parts.model)
        self._ddp = inner if isinstance(inner, nn.parallel.DistributedDataParallel) else None
        # Set when eval/diagnostics/restore may have left modules out of train mode; the next
        # update then calls model.train() (a recursive walk) instead of every update doing so.
        self._mode_dirty = True
        # Auxiliary loss terms of the last update (Task.aux_losses), detached, for the log.
        self._aux: dict[str, Tensor] = {}
        # The last diagnostics failure ("step N: error"), repeated in status.json from then on.
        self.diag_error: str | None = None

    # ------------------------------------------------------------ setup helpers

    def _autocast_dtype(self, precision: str) -> torch.dtype | None:
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _grad_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        if self.fsdp:
            self.p.model.set_requires_gradient_sync(enabled)
            return contextlib.nullcontext()
        if not enabled and self._ddp is not None:
            return self._ddp.no_sync()
        return contextlib.nullcontext()

    # ------------------------------------------------------------ state

    def state_for_checkpoint(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(shared state written by rank 0, this rank's own state, model/optimizer state dicts
        that every rank writes its shards of)."""
        data_state = self.p.data.train.state_dict()
        shared = {
            "trainer": {
                "guard": self.guard.state_dict(),
                "best": dict(self.best),
                "last_eval": dict(self.last_eval),
                "last_loss": self.last_loss,
                "rollbacks": self.rollbacks,
                "elapsed": self.elapsed(),
                "wandb_run_id": self.p.wandb_run_id,
                "total_steps": self.p.total_steps,
            },
            # Rank 0's stream position: what every rank restarts from at another world size.
            "data": data_state,
        }
        own = {"data": data_state, "rng": rng_state()}
        return shared, own, sharded_state_dict(self.p.model, self.p.optimizer)

    def restore(self, path: str | Path, restore_stream: bool = True) -> int:
        """Load a checkpoint into model, optimizer, trainer and (optionally) data/RNG state."""
        shared, own = self.p.checkpoints.load(path)
        # The schedule adds `initial_lr` to every param group before the first update; a fresh
        # optimizer lacks it, and FSDP2's keyed optimizer state load refuses the mismatch.
        self.p.schedule.apply(self.p.optimizer, self.step)
        if "model" in shared:  # formats 1 and 2: full state dicts in state.pt
            load_model_optimizer_state(
                self.p.model, self.p.optimizer, shared["model"], shared["optimizer"]
            )
        else:
            self.p.checkpoints.load_sharded(path, self.p.model, self.p.optimizer)
        t = shared["trainer"]
        self.guard.load_state_dict(t["guard"])
        self.best = dict(t["best"])
        self.last_eval = dict(t["last_eval"])
        self.last_loss = t["last_loss"]
        self.elapsed_before = float(t["elapsed"])
        if t.get("wandb_run_id"):
            self.p.wandb_run_id = t["wandb_run_id"]
        self._t_start = time.time()
        if restore_stream:
            self.rollbacks = int(t["rollbacks"])
        self.step = int(shared["step"])
        if own is None:
            self._restore_at_new_world_size(path, shared, restore_stream)
        else:
            if restore_stream:
                self.p.data.train.load_state_dict(own["data"])
            set_rng_state(own["rng"])
        self._last_saved_step = self.step
        self._mode_dirty = True
        return self.step

    def _restore_at_new_world_size(
        self, path: str | Path, shared: dict[str, Any], restore_stream: bool
    ) -> None:
        """A checkpoint of another world size: the stream continues from rank 0's saved
        position where it can map it to this layout; each rank's RNG is seeded from
        (seed, rank, step), so the continuation is defined and reproducible."""
        data_state = shared.get("data")
        if restore_stream and data_state is not None:
            try:
                self.p.data.train.load_state_dict(data_state)
            except (ValueError, KeyError) as err:
                log.warning(
                    "checkpoint %s: the data stream restarts fresh at world size %d (%s)",
                    path,
                    self.ctx.world_size,
                    str(err).splitlines()[0] if str(err) else type(err).__name__,
                )
        elif restore_stream:
            log.warning(
                "checkpoint %s has no data position for world size %d: the data stream "
                "restarts fresh",
                path,
                self.ctx.world_size,
            )
        seed = stream_seed(self.p.cfg.seed, self.ctx.rank, self.step)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def elapsed(self) -> float:
        """Wall seconds of this run so far, across restarts."""
        return self.elapsed_before + (time.time() - self._t_start)

    def save_checkpoint(self) -> None:
        """Checkpoint the current (good) step on every rank."""
        if self._last_saved_step == self.step:
            return
        shared, own, sharded = self.state_for_checkpoint()
        self.p.checkpoints.save(self.step, shared, own, sharded)
        self._last_saved_step = self.step

    # ------------------------------------------------------------ one update

    def _train_step(self) -> tuple[Tensor, Tensor, int]:
        """Forward/backward over the micro batches; returns (mean loss, grad norm, units)."""
        model, task = self.p.model, self.p.task
        if self._mode_dirty or not model.training:
            model.train()
            self._mode_dirty = False
        accum = self.p.accum_steps
        if accum == 1:  # the common case, without the accumulator's extra ops and graph node
            inputs, targets = self._next_batch()
            with self._autocast():
                outputs = model(inputs)
                loss = task.loss(outputs, targets)
                aux = task.aux_losses(outputs)
            (loss + sum(aux.values()) if aux else loss).backward()
            self._aux = {k: v.detach() for k, v in aux.items()}
            return loss.detach(), self._clip_and_norm(), task.units(inputs)
        loss_sum = torch.zeros((), device=self.device)
        units = 0
        self._aux = {}
        for i in range(accum):
            inputs, targets = self._next_batch()
            units += task.units(inputs)
            with self._grad_sync(i == accum - 1):
                with self._autocast():
                    outputs = model(inputs)
                    loss = task.loss(outputs, targets)
                    aux = task.aux_losses(outputs)
                ((loss + sum(aux.values()) if aux else loss) / accum).backward()
            loss_sum += loss.detach()
            for k, v in aux.items():
                self._aux[k] = self._aux.get(k, 0.0) + v.detach() / accum
        grad_norm = self._clip_and_norm()
        return loss_sum / accum, grad_norm, units

    def _next_batch(self) -> tuple[Tensor, Tensor]:
        data = self.p.data
        inputs, targets = next(data.train)
        if data.mix is not None:
            inputs, targets = data.mix(inputs, targets)
        return (
            inputs.to(self.device, non_blocking=True),
            targets.to(self.device, non_blocking=True),
        )

    def _clip_and_norm(self) -> Tensor:
        params = [p for p in self._params if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            return torch.zeros((), device=self.device)
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor partial norm → the global one
            norm = norm.full_tensor()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.cfg.grad_clip, norm, foreach=True)
        return norm

    # ------------------------------------------------------------ periodic work

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean eval metrics over up to ``eval_batches`` validation batches, all ranks."""
        model = self.p.eval_model if self.p.eval_model is not None else self.p.model
        was_training = model.training
        model.eval()
        sums: Tensor | None = None
        try:
            with preserved_rng():
                for i, (inputs, targets) in enumerate(self.p.data.make_val()):
                    if i >= self.cfg.eval_batches:
                        break
                    inputs = inputs.to(self.device)
                    targets = targets.to(self.device)
                    with self._autocast():
                        outputs = model(inputs)
                    batch = self.p.task.eval_sums(outputs, targets)
                    sums = batch if sums is None else sums + batch
        finally:
            model.train(was_training)
            self._mode_dirty = True
        if sums is None:
            return {}
        sums = self.ctx.all_reduce_sum(sums.to(self.device))
        return {f"eval/{k}": v for k, v in self.p.task.eval_metrics(sums.cpu()).items()}

    def _diagnostics(self) -> dict[str, float]:
        if self.p.diagnostics is None:
            return {}
        self._mode_dirty = True  # the probe may switch modules to eval
        try:
            with preserved_rng():
                out = self.p.diagnostics()
        except Exception as err:
            # A diagnostics bug must not end a week-long run; it is logged and recorded.
            log.exception("diagnostics failed at step %d", self.step)
            self.p.optimizer.zero_grad(set_to_none=True)
            self.diag_error = f"step {self.step}: {err!r}"
            self._status("running")
            return {"diag_error": repr(err)}
        # The probe backward (15 terms) may leave gradients behind; the next update starts clean.
        self.p.optimizer.zero_grad(set_to_none=True)
        self._save_attention_maps()
        return out

    def _save_attention_maps(self) -> None:
        every = self.p.cfg.diagnostics.attention_maps_every
        if not every or self.step % every or not self.ctx.is_main or self.p.eval_model is None:
            return
        from weyl.diagnostics.attention_maps import save_probe_attention

        inputs = self.p.data.probe[0].to(self.device)
        path = Path(self.p.cfg.run_dir) / "attention" / f"step_{self.step:07d}.pt"
        with preserved_rng():
            save_probe_attention(self.p.eval_model, inputs, path)

    def _lr_view_due(self) -> bool:
        every = self.p.cfg.diagnostics.lr_every
        return (
            self.p.lr_view is not None
            and every > 0
            and self._due(every)
            and clip_active(self.p.optimizer)
        )

    def _optimizer_report(self, summary: bool, per_tensor: bool) -> dict[str, float]:
        """The optimizer's LR record of this step: the ``optim/*`` summary (log steps) and
        Fig. 15's per-tensor keys (``lr_every`` steps) from one ``lr_report()`` (one transfer)."""
        report_fn = getattr(self.p.optimizer, "lr_report", None)
        if not callable(report_fn) or not (summary or per_tensor):
            return {}
        report = report_fn()
        out = summarize_lr_report(report) if summary else {}
        if per_tensor and self.p.lr_view is not None:
            out.update(self.p.lr_view(report))
        return out

    def _average_on_device(self, loss: Tensor, grad_norm: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, grad norm) averaged over ranks on the device: an all-reduce, no host sync."""
        if not self.ctx.is_distributed:
            return loss.float(), grad_norm.float().to(self.device)
        both = torch.stack([loss.float(), grad_norm.float().to(self.device)])
        both = self.ctx.all_reduce_sum(both) / self.ctx.world_size
        return both[0], both[1]

    def _host_read(
        self, loss: Tensor, grad_norm: Tensor
    ) -> tuple[Crash | None, float, float, str | None]:
        """(first flagged update, loss, grad norm, stop) on the host: the one sync it needs.

        ``stop`` is None, ``"preempt"`` (SIGUSR1/2, SIGTERM) or ``"interrupt"`` (Ctrl-C);
        under DDP/FSDP every rank must agree on it, so the flags travel in an all-reduce.
        """
        kind = self.preemption.stop_kind
        if not self.ctx.is_distributed:
            crash, (loss_f, norm_f) = self.guard.host_read(loss, grad_norm)
            return crash, loss_f, norm_f, kind
        flags = torch.tensor(
            [1.0 if kind == "preempt" else 0.0, 1.0 if kind == "interrupt" else 0.0],
            device=self.device,
        )
        flags = self.ctx.all_reduce_sum(flags)
        crash, (loss_f, norm_f, preempt, interrupt) = self.guard.host_read(
            loss, grad_norm, flags[0], flags[1]
        )
        # A Ctrl-C on any rank wins over a preemption: the user asked to stop, not to requeue.
        stop = "interrupt" if interrupt > 0 else "preempt" if preempt > 0 else None
        return crash, loss_f, norm_f, stop

    def _sync_due(self) -> bool:
        """Whether the host reads the verdict after this update (see the module docstring)."""
        p, cfg = self.p, self.cfg
        return (
            self._due(cfg.log_every)
            or self._due(cfg.eval_every)
            or self._due(cfg.ckpt_every)
            or (p.cfg.diagnostics.enabled and self._due(p.cfg.diagnostics.every))
            or (not self.ctx.is_distributed and self.preemption.stop_kind is not None)
        )

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.p.total_steps

    def _update_best(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            better = max if key.endswith(("top1", "acc")) else min
            self.best[key] = value if key not in self.best else better(self.best[key], value)

    # ------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (or until a crash/preemption); returns the run summary."""
        self.preemption.install()
        try:
            return self._fit()
        finally:
            self.preemption.restore()

    def _status(self, state: str, reason: str | None = None, **extra: Any) -> None:
        if self.diag_error is not None:
            extra.setdefault("diag_error", self.diag_error)
        if self.ctx.is_main:
            write_status(
                self.p.cfg.run_dir, state, self.step, reason, rollbacks=self.rollbacks, **extra
            )

    def _fit(self) -> dict[str, Any]:
        p, cfg = self.p, self.cfg
        unit = p.task.unit
        self._status("running")
        if self.step == 0 and p.cfg.diagnostics.enabled and p.diagnostics is not None:
            record = {"step": 0, "lr": p.schedule.lr(0), **self._diagnostics()}
            if self.ctx.is_main:
                p.loggers.log(record)
        window_units, window_time = 0, 0.0
        peak = peak_flops(self.device)
        while self.step < p.total_steps:
            t0 = time.perf_counter()
            lr = p.schedule.apply(p.optimizer, self.step)
            loss_t, norm_t, units = self._train_step()
            loss_t, norm_t = self._average_on_device(loss_t, norm_t)
            if fault_injection.hooks.replace_loss_with_nan(self.step + 1):
                loss_t = torch.full_like(loss_t, float("nan"))
            halted = self.guard.observe(loss_t, norm_t, self.step + 1)
            read = None
            if self.skips_on_device:
                p.optimizer.found_inf = halted
            else:
                read = self._host_read(loss_t, norm_t)
            # A verdict read before step() keeps a flagged update from being applied; otherwise
            # the optimizer skipped it on the device and the host reads the verdict after.
            if read is None or read[0] is None:
                p.optimizer.step()
                p.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                window_units += units * self.ctx.world_size
                fault_injection.hooks.after_update()
                if read is None and not self._sync_due() and self.step < p.total_steps:
                    # No host sync: the GPU keeps its queue; the guard decides on the device.
                    window_time += time.perf_counter() - t0
                    if self._lr_view_due():  # rank 0 alone: no collective, no verdict
                        lr_keys = self._optimizer_report(False, True)
                        if lr_keys and self.ctx.is_main:
                            p.loggers.log({"step": self.step, "lr": lr, **lr_keys})
                    fault_injection.hooks.after_step(self.step)
                    continue
                if read is None:
                    read = self._host_read(loss_t, norm_t)
            if read[0] is not None:
                outcome = self._on_crash(read[0])
                if outcome is not None:
                    return outcome
                window_units, window_time = 0, 0.0
                continue
            _, loss, grad_norm, stop = read
            self.last_loss = loss
            window_time += time.perf_counter() - t0

            record: dict[str, Any] = {}
            log_step = self._due(cfg.log_every)
            if log_step:
                rate = window_units / window_time if window_time > 0 else 0.0
                record.update(
                    {
                        "loss": loss,
                        "lr": lr,
                        "grad_norm": grad_norm,
                        f"{unit}_per_s": rate,
                        "elapsed": self.elapsed(),
                    }
                )
                if peak is not None and p.flops_per_unit is not None:
                    record["mfu"] = p.flops_per_unit * rate / (peak * self.ctx.world_size)
                mem = peak_memory_gib(self.device)
                if mem is not None:
                    record["peak_mem_gib"] = mem
                window_units, window_time = 0, 0.0
                # The objective's extra terms (z_loss), this rank's value; `loss` stays the CE.
                record.update({k: float(v) for k, v in self._aux.items()})
            record.update(self._optimizer_report(log_step, self._lr_view_due()))
            if self._due(cfg.eval_every):
                self.last_eval = self.evaluate()
                self._update_best(self.last_eval)
                record.update(self.last_eval)
            if p.cfg.diagnostics.enabled and self._due(p.cfg.diagnostics.every):
                record.update(self._diagnostics())
            if record and self.ctx.is_main:
                record.setdefault("loss", loss)
                record.setdefault("lr", lr)
                p.loggers.log({"step": self.step, **record})
            if self._due(cfg.ckpt_every):
                self.save_checkpoint()
            fault_injection.hooks.after_step(self.step)
            if stop == "interrupt" and self.step < p.total_steps:
                return self._on_interrupt()
            if stop == "preempt" and self.step < p.total_steps:
                return self._on_preempt()
        self.save_checkpoint()
        self.p.checkpoints.wait()
        self._status("finished", final_loss=self.last_loss)
        return self.summary("finished", exit_code=0)

    def summary(self, state: str, exit_code: int, reason: str | None = None) -> dict[str, Any]:
        """What :func:`run_training` returns."""
        return {
            "state": state,
            "step": self.step,
            "total_steps": self.p.total_steps,
            "final_loss": self.last_loss,
            "reason": reason,
            "exit_code": exit_code,
            "eval": dict(self.last_eval),
            "best": dict(self.best),
            "rollbacks": self.rollbacks,
            "elapsed": self.elapsed(),
            "run_dir": self.p.cfg.run_dir,
        }

    def _on_interrupt(self) -> dict[str, Any]:
        """Ctrl-C: checkpoint this step and stop; a rerun of the same command continues."""
        self.save_checkpoint()
        self.p.checkpoints.wait()
        reason = "Ctrl-C (SIGINT); checkpoint saved"
        self._status("interrupted", reason)
        return self.summary("interrupted", exit_code=INTERRUPTED, reason=reason)

    def _on_preempt(self) -> dict[str, Any]:
        self.save_checkpoint()
        self.p.checkpoints.wait()
        reason = "preemption signal"
        if self.preemption.signum is not None:
            import signal as _signal

            reason = f"signal {_signal.Signals(self.preemption.signum).name}"
        launcher = dead_launcher()
        if launcher is not None:
            reason = f"launcher (pid {launcher}) died; not requeued"
        self._status("preempted", reason)
        if self.ctx.is_main and self.p.requeue and slurm_job_id() is not None and launcher is None:
            requeue_slurm_job()
        return self.summary("preempted", exit_code=PREEMPTED_EXIT_CODE, reason=reason)

    def _on_crash(self, crash: Crash) -> dict[str, Any] | None:
        """Record the crash; roll back (returns None to continue) or stop (returns the summary).

        The weights are those before update ``crash.update`` (it and any later update were
        skipped), so the diagnostics logged with the crash describe the model that diverged.
        """
        at_step, reason, loss, grad_norm = crash.update, crash.reason, crash.loss, crash.grad_norm
        seen_at, self.step = self.step, at_step - 1  # the state the diagnostics describe
        self.p.optimizer.zero_grad(set_to_none=True)
        diag = self._diagnostics()
        if self.ctx.is_main:
            if seen_at >= at_step and self.p.loggers.jsonl is not None:
                # Records of skipped updates (Fig. 15's lr view) must not outlive the crash.
                self.p.loggers.jsonl.truncate_after(at_step - 1, keep_events=True)
            log.error("crash at step %d: %s", at_step, reason)
            self.p.loggers.log(
                {
                    "step": at_step,
                    "event": "crash",
                    "reason": reason,
                    "loss": loss,
                    "grad_norm": grad_norm,
                    **diag,
                }
            )
        latest = self.p.checkpoints.latest()
        if self.cfg.on_crash == "rollback" and self.rollbacks < self.p.max_rollbacks and latest:
            good = self._newest_good_checkpoint(at_step)
            if good is not None:
                rollbacks = self.rollbacks + 1
                # Keep the data stream where it is: replaying the same batches replays the crash.
                self.restore(good, restore_stream=False)
                self.rollbacks = rollbacks
                if self.ctx.is_main and self.p.loggers.jsonl is not None:
                    self.p.loggers.jsonl.truncate_after(self.step, keep_events=True)
                    self.p.loggers.log(
                        {
                            "step": self.step,
                            "event": "rollback",
                            "reason": reason,
                            "crash_step": at_step,
                            "rollbacks": self.rollbacks,
                        }
                    )
                self._status("running", f"rolled back from step {at_step}: {reason}")
                return None
            reason, latest = f"{reason}; no intact checkpoint to roll back to", None
        self.step = at_step
        self._status("crashed", reason, last_good_checkpoint=str(latest) if latest else None)
        return self.summary("crashed", exit_code=CRASHED, reason=reason)

    def _newest_good_checkpoint(self, at_step: int) -> Path | None:
        """The checkpoint a rollback goes back to: the newest one every rank can verify and
        load; damaged newer ones are skipped (one warning and a ``checkpoint_skipped`` event
        each), as a resume does. None when no checkpoint is intact."""
        try:
            good = self.p.checkpoints.load_newest_good()
        except CheckpointError as err:
            log.error("rollback impossible: %s", err)
            good = None
        if self.ctx.is_main:
            for skipped in self.p.checkpoints.skipped:
                self.p.loggers.log(
                    {
                        "step": at_step,
                        "event": "checkpoint_skipped",
                        "path": str(skipped.path),
                        "checkpoint_step": skipped.step,
                        "reason": skipped.reason,
                    }
                )
        return good


def summarize_lr_report(report: dict[str, Any]) -> dict[str, float]:
    """Per-tensor ``{name: {lr, lr_eff, clipped, ...}}`` → mean/min effective LR, clip rate, and
    how many tensors the clip measured against ``optim.sigma_floor`` (``optim/floored``)."""
    if not report:
        return {}
    summary = lr_summary(report.values())
    return {
        "optim/lr_eff_mean": summary["effective_mean"],
        "optim/lr_eff_min": summary["effective_min"],
        "optim/clip_rate": summary["clip_rate"],
        "optim/floored": float(sum(r.get("floored", 0.0) for r in report.values())),
    }
