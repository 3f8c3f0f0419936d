"""The human-readable training log on rank 0: start banner, step lines, eval / diagnostics /
event lines and an end summary.

Without a terminal (a Slurm ``.out`` file, ``> log.txt``) every line is plain ASCII on stdout,
flushed as it is written, so ``tail -f`` follows a run live::

    step   40/200 | loss 3.1245 | lr 6.00e-04 | clip 12% | 41.2k tok/s | elapsed 52s | eta 3m28s

On a terminal the rich progress bar (:class:`weyl.train.loggers.ProgressBar`) replaces the step
lines and the other lines print above it. ``logger.console`` picks the mode: ``auto`` (bar on a
terminal when ``logger.progress`` is true, lines otherwise), ``lines`` or ``off``.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from weyl.config import TrainConfig
from weyl.optim.weyl_clip import clip_off
from weyl.readable_numbers import format_duration, format_si
from weyl.train.loggers import ProgressBar

UNIT_ABBREVIATIONS = {"tokens": "tok", "images": "img"}


def _loss(value: Any) -> str:
    return "nan" if value is None else f"{float(value):.4f}"


def _step(step: int, total: int) -> str:
    width = len(str(total))
    return f"step {step:>{width}}/{total}"


# ------------------------------------------------------------------ one line per record kind


def step_line(record: dict[str, Any], total: int, unit: str, eta_s: float | None) -> str:
    """The line of one ``log_every`` step (nanoGPT's ``iter N: loss ...`` in fixed columns)."""
    parts = [
        _step(record["step"], total),
        f"loss {_loss(record.get('loss'))}",
        f"lr {record.get('lr', 0.0):.2e}",
    ]
    if record.get("optim/clip_rate") is not None:
        parts.append(f"clip {100 * record['optim/clip_rate']:.0f}%")
    if record.get("grad_norm") is not None:
        parts.append(f"gnorm {record['grad_norm']:.3g}")
    rate = record.get(f"{unit}_per_s")
    if rate is not None:
        parts.append(f"{format_si(rate)} {UNIT_ABBREVIATIONS.get(unit, unit)}/s")
    if record.get("mfu") is not None:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    if record.get("peak_mem_gib") is not None:
        parts.append(f"mem {record['peak_mem_gib']:.1f}GiB")
    if record.get("elapsed") is not None:
        parts.append(f"elapsed {format_duration(record['elapsed'])}")
    if eta_s is not None:
        parts.append(f"eta {format_duration(eta_s)}")
    return " | ".join(parts)


def eval_line(record: dict[str, Any], total: int) -> str | None:
    """``eval step N/T | loss ... | ppl ...`` (or ``top1 ...%``), or None without eval keys."""
    metrics = {k[len("eval/") :]: v for k, v in record.items() if k.startswith("eval/")}
    if not metrics:
        return None
    parts = [f"eval {_step(record['step'], total)}"]
    for name in sorted(metrics, key=lambda k: (k != "loss", k)):
        value = metrics[name]
        if value is None:
            parts.append(f"{name} nan")
        elif name == "loss":
            parts.append(f"loss {_loss(value)}")
        elif name.startswith("top") or name.endswith("acc"):
            parts.append(f"{name} {value:.2f}%")  # the task reports these in percent already
        else:
            parts.append(f"{name} {value:.4g}")
    return " | ".join(parts)


def _max_of(record: dict[str, Any], prefix: str, suffix: str) -> float | None:
    values = [
        v
        for k, v in record.items()
        if k.startswith(prefix) and k.endswith(suffix) and isinstance(v, int | float)
    ]
    return max(values) if values else None


def diagnostics_line(record: dict[str, Any], total: int) -> str | None:
    """The diagnostics of this step in one line (entropy, σ₁(WqᵀWk), SEC, collapse)."""
    step = f"diag {_step(record['step'], total)}"
    if "diag_error" in record:
        return f"{step} | diagnostics failed: {record['diag_error']}"
    parts = []
    if record.get("attn/entropy_min") is not None:
        parts.append(f"attn entropy min {record['attn/entropy_min']:.3f}")
    if record.get("attn/qk_sigma1_max") is not None:
        parts.append(f"sigma1(Wq^T Wk) max {record['attn/qk_sigma1_max']:.4g}")
    sec = _max_of(record, "attn/L", "/sec_s2_max")
    if sec is not None:
        parts.append(f"SEC(s=2) max {sec:.3f}")
    if record.get("lr/clip_rate") is not None:
        parts.append(f"lr clipped {100 * record['lr/clip_rate']:.0f}% of tensors")
    if record.get("collapse/any_malignant") is not None:
        layers = int(record.get("collapse/malignant_layers") or 0)
        if layers:
            first = int(record.get("collapse/first_malignant_layer", -1))
            parts.append(f"COLLAPSE in {layers} layer(s), first L{first:02d}")
        else:
            parts.append("no collapse")
    return " | ".join([step, *parts]) if parts else None


def event_line(record: dict[str, Any]) -> str:
    """One line for a ``{"event": ...}`` record: crash, rollback, preemption or any other."""
    event = str(record["event"])
    step = record.get("step")
    reason = record.get("reason")
    if event == "crash":
        line = f"CRASH at step {step}: {reason}"
        extras = [f"loss {_loss(record.get('loss'))}"]
        if "grad_norm" in record:
            gn = record["grad_norm"]
            extras.append(f"grad norm {'nan' if gn is None else f'{gn:.3g}'}")
        return f"{line} | {' | '.join(extras)}"
    if event == "rollback":
        return (
            f"ROLLBACK to the checkpoint of step {step} after the crash at step "
            f"{record.get('crash_step')} (rollback {record.get('rollbacks')}): {reason}"
        )
    line = f"{event.upper()} at step {step}"
    if reason:
        line += f": {reason}"
    changes = record.get("changes")
    if isinstance(changes, dict):  # config_changed: {key: [before, after]}
        line += ": " + ", ".join(
            f"{k} {v[0]!r} -> {v[1]!r}"
            if isinstance(v, list | tuple) and len(v) == 2
            else f"{k} {v!r}"
            for k, v in changes.items()
        )
    extras = [
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in record.items()
        if k not in ("step", "event", "reason")
        and "/" not in k
        and isinstance(v, int | float | str)
    ]
    return " | ".join([line, *extras])


# ------------------------------------------------------------------ banner and summary


def recipe_of(run_dir: str | Path) -> str | None:
    """The recipe recorded in ``<run_dir>/meta.json`` by ``weyl train`` / ``weyl demo``."""
    try:
        meta = json.loads((Path(run_dir) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("recipe") or (meta.get("choices") or {}).get("recipe")


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters of ``model`` (tied weights once; global sizes under FSDP2)."""
    return sum(p.numel() for p in model.parameters())


def _optimizer_text(cfg: TrainConfig) -> str:
    o = cfg.optim
    text = f"{o.name} lr {o.lr:.2e}"
    if o.name in ("adamw", "adamw2"):
        text += f", betas ({o.betas[0]:g}, {o.betas[1]:g}), eps {o.eps:g}"
    else:
        text += f", momentum {o.momentum:g}"
    text += f", weight decay {o.weight_decay:g}"
    if o.name in ("adamw2", "sgdw2"):
        clip = "off" if clip_off(o.tau) else f"{o.tau:g}"
        text += f", tau {clip}, sigma steps dW {o.power_iters} / W {o.weight_iters}"
    if cfg.trainer.grad_clip > 0:
        text += f", grad clip {cfg.trainer.grad_clip:g}"
    return text


def _schedule_text(cfg: TrainConfig, total: int) -> str:
    s = cfg.schedule
    if s.warmup_steps:
        warmup = f"warmup {s.warmup_steps} steps"
    elif s.warmup_epochs:
        warmup = f"warmup {s.warmup_epochs:g} epochs"
    else:
        warmup = "no warmup"
    return f"{s.name}, {warmup}, min lr {s.min_lr:g}, {total} steps"


def banner_lines(
    cfg: TrainConfig,
    *,
    model: nn.Module,
    world_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    total_steps: int,
    micro_batch: int,
    accum_steps: int,
    unit: str,
    resume_step: int | None = None,
) -> list[str]:
    """The start banner: what runs, where, on what, and how it is batched and logged."""
    n_params = count_parameters(model)
    precision = (
        "fp32" if autocast_dtype is None else f"{str(autocast_dtype).split('.')[-1]} autocast"
    )
    t = cfg.trainer
    per_step = f"{t.global_batch_size} {unit}"
    block = getattr(cfg.data, "block_size", None)
    if unit == "tokens" and block:
        per_step = f"{t.global_batch_size * block:,} tokens ({t.global_batch_size} x {block})"
    diag = f", diagnostics every {cfg.diagnostics.every}" if cfg.diagnostics.enabled else ""
    lines = [
        f"weyl train | recipe {recipe_of(cfg.run_dir) or '-'} | name {cfg.name}",
        f"  run dir    {Path(cfg.run_dir).resolve()}",
        f"  model      {cfg.model.family}, {n_params:,} parameters ({format_si(n_params)})",
        f"  processes  {world_size} on {device}, precision {precision}",
        f"  optimizer  {_optimizer_text(cfg)}",
        f"  schedule   {_schedule_text(cfg, total_steps)}",
        f"  batch      {t.global_batch_size} global = {micro_batch} micro x {accum_steps} "
        f"accumulation x {world_size} process{'es' if world_size > 1 else ''}; {per_step} per step",
        f"  logging    every {t.log_every} steps, eval every {t.eval_every}, "
        f"checkpoint every {t.ckpt_every}{diag}",
    ]
    if resume_step is not None:
        lines.append(f"  resumed    from the checkpoint of step {resume_step}")
    return lines


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The end summary: outcome, final losses, wall time, where the results are."""
    state = summary.get("state", "?")
    head = f"{state} at step {summary.get('step')}/{summary.get('total_steps')}"
    if summary.get("reason"):
        head += f" ({summary['reason']})"
    head += f" after {format_duration(float(summary.get('elapsed') or 0.0))}"
    if summary.get("rollbacks"):
        head += f", {summary['rollbacks']} rollback(s)"
    which = "final" if state == "finished" else "last"
    results = [f"{which} train loss {_loss(summary.get('final_loss'))}"]
    evals = summary.get("eval") or {}
    if "eval/loss" in evals:
        results.append(f"eval loss {_loss(evals['eval/loss'])}")
    for key, value in sorted(evals.items()):
        if key.startswith("eval/top") and value is not None:
            results.append(f"{key[5:]} {value:.2f}%")
    run_dir = Path(summary.get("run_dir") or ".").resolve()
    lines = [f"weyl train {head}", f"  results    {' | '.join(results)}"]
    if state in ("preempted", "interrupted"):
        lines.append(
            f"  resume     checkpoint of step {summary.get('step')} saved; a requeued job or the "
            "same command resumes from it (trainer.resume=auto)"
        )
    lines += [
        f"  metrics    {run_dir / 'metrics.jsonl'} (status.json, checkpoints/ beside it)",
        f"  figures    weyl report {shlex.quote(str(run_dir))}   (writes {run_dir / 'report'})",
    ]
    return lines


# ------------------------------------------------------------------ the sink


class ConsoleLog:
    """Rank 0's human-readable log: plain flushed lines on stdout, or lines above a rich bar."""

    def __init__(
        self,
        mode: str,
        total: int,
        start: int,
        unit: str,
        *,
        progress: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = mode != "off"
        self.total, self.unit = total, unit
        is_terminal = hasattr(self.stream, "isatty") and self.stream.isatty()
        use_bar = self.enabled and mode == "auto" and progress and is_terminal
        self.bar = ProgressBar(total, start, unit, force=True) if use_bar else None
        # ETA from the steps this process has run since its first step line (start-up excluded).
        self._t_created = time.monotonic()
        self._start = start
        self._first: tuple[float, int] | None = None
        self._events: set[str] = set()

    def print(self, line: str) -> None:
        """One line: above the bar on a terminal, else on the stream, flushed."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.print(line)
        else:
            print(line, file=self.stream, flush=True)

    def banner(self, lines: list[str]) -> None:
        """Print the start banner."""
        for line in lines:
            self.print(line)

    def _eta(self, step: int) -> float | None:
        now = time.monotonic()
        if self._first is None or step <= self._first[1]:
            done = step - self._start
            eta = (now - self._t_created) / done * (self.total - step) if done > 0 else None
            self._first = (now, step)
            return eta
        t0, s0 = self._first
        return (now - t0) / (step - s0) * (self.total - step)

    def log(self, record: dict[str, Any]) -> None:
        """Print what ``record`` holds: an event, a step line, eval and diagnostics lines."""
        if not self.enabled:
            return
        if "event" in record:
            self._events.add(str(record["event"]))
            self.print(event_line(record))
            if record["event"] == "rollback":
                self._first = None  # steps went back: restart the ETA's reference
            diag = diagnostics_line(record, self.total)
            if diag is not None:
                self.print(diag)
            return
        if self.bar is not None and "loss" in record:
            self.bar.update(record["step"], record)
        elif f"{self.unit}_per_s" in record:  # only log_every steps carry the throughput
            self.print(step_line(record, self.total, self.unit, self._eta(record["step"])))
        for line in (eval_line(record, self.total), diagnostics_line(record, self.total)):
            if line is not None:
                self.print(line)

    def summary(self, summary: dict[str, Any]) -> None:
        """Print the end summary (after the bar stopped, so it stays on screen)."""
        self.close()
        state = summary.get("state")
        if state == "preempted" and not self._events & {"preempt", "preempted", "preemption"}:
            # The trainer records a preemption in status.json only; the log still gets its line.
            record = {"event": state, "step": summary.get("step"), "reason": summary.get("reason")}
            self.print(event_line(record))
        for line in summary_lines(summary):
            self.print(line)

    def close(self) -> None:
        """Stop the bar; later lines print plainly."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
