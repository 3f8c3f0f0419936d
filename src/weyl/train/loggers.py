"""Metric sinks on rank 0: the JSONL file (always), the console log (:mod:`weyl.train.console_log`:
plain lines, or a rich progress bar on a terminal), and wandb.

``metrics.jsonl`` holds one JSON object per log step with stable keys (``step``, ``loss``,
``lr``, ``tokens_per_s``/``images_per_s``, ``grad_norm``, ``elapsed`` plus ``eval/…``,
``optim/…`` and the diagnostics' ``attn/…``, ``terms/…``, ``collapse/…``, ``lr/…`` keys)
and one object per event (``{"step": N, "event": "crash", ...}``). Floats are written with ``repr`` precision, so a resumed run can be compared
bitwise; non-finite values become ``null`` (strict JSON) and the event line says why.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import string
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weyl.durable_files import with_filename, write_durably
from weyl.train.train_config import WandbConfig

if TYPE_CHECKING:
    from weyl.train.console_log import ConsoleLog


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    """Append-only ``metrics.jsonl``; on resume, lines past the resumed step are dropped first."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            self.truncate_after(resume_step)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - lives as long as the run

    def truncate_after(self, step: int, keep_events: bool = False) -> None:
        """Drop metric lines with ``step`` > ``step`` (atomic rewrite); optionally keep events."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
            if record.get("step", 0) <= step or (keep_events and "event" in record):
                kept.append(line)
        write_durably(self.path, "".join(f"{line}\n" for line in kept))
        if hasattr(self, "_file"):
            self._file.close()
            self._file = open(self.path, "a", buffering=1)  # noqa: SIM115

    def log(self, record: dict[str, Any]) -> None:
        """Write one line and flush it to the OS (survives a SIGKILL of this process)."""
        clean = {k: _finite_or_none(v) for k, v in record.items()}
        try:
            self._file.write(json.dumps(clean, allow_nan=False) + "\n")
            self._file.flush()
        except OSError as err:  # a failed write() names no file; the one-line report needs it
            raise with_filename(err, self.path) from err

    def close(self) -> None:
        """Close the file (a line the disk had no room for is dropped, not raised twice)."""
        with contextlib.suppress(OSError):
            self._file.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class ProgressBar:
    """A rich progress bar with loss, LR, throughput and ETA; silent when stdout is no TTY."""

    def __init__(self, total: int, start: int, unit: str, force: bool = False) -> None:
        self.enabled = force or sys.stdout.isatty()
        self.unit = unit
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self._task = self._progress.add_task("train", total=total, completed=start, info="")
        self._progress.start()

    def update(self, step: int, record: dict[str, Any]) -> None:
        """Move to ``step`` and show the latest loss, LR and throughput."""
        if not self.enabled:
            return
        rate = record.get(f"{self.unit}_per_s")
        info = f"loss {record.get('loss', float('nan')):.4f}  lr {record.get('lr', 0.0):.3g}"
        if record.get("optim/clip_rate") is not None:
            info += f"  clip {100 * record['optim/clip_rate']:.0f}%"
        if rate:
            info += f"  {rate:,.0f} {self.unit}/s"
        self._progress.update(self._task, completed=step, info=info)

    def print(self, line: str) -> None:
        """Print ``line`` above the bar (as it is: no rich markup or highlighting)."""
        if self.enabled:
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        """Stop redrawing."""
        if self.enabled:
            self._progress.stop()


WANDB_ENV_MODES = {
    "online": "online",
    "offline": "offline",
    "disabled": "disabled",
    "run": "online",
    "dryrun": "offline",
}  # wandb's own aliases
# Seconds wandb may spend reaching its server before an online run falls back to offline
# (wandb's default waits ~100 s and then raises; measured with this: ~6-8 s to the fallback).
WANDB_INIT_TIMEOUT_S = 8.0


def resolve_wandb_mode(configured: str | None) -> str:
    """The wandb mode of a run: ``logger.wandb.mode`` when set (config, recipe or override),
    else the ``WANDB_MODE`` environment variable, else ``offline``."""
    if configured:
        return configured
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if not env:
        return "offline"
    if env not in WANDB_ENV_MODES:
        raise ValueError(
            f"WANDB_MODE={env!r} is unknown; use online, offline or disabled "
            "(or set logger.wandb.mode)"
        )
    return WANDB_ENV_MODES[env]


class WandbLogger:
    """wandb on rank 0: offline by default, one run per training run, resumed by id.

    An online run that cannot reach the server within :data:`WANDB_INIT_TIMEOUT_S` logs one
    warning and continues offline (``wandb sync`` uploads it later): a training run never
    waits on, or dies of, the network.
    """

    def __init__(
        self, cfg: WandbConfig, run_dir: str | Path, config: dict[str, Any], run_id: str | None
    ) -> None:
        import wandb

        mode = resolve_wandb_mode(cfg.mode)
        self._wandb = wandb
        self.mode = mode
        # A resumed run keeps its checkpointed id; a `wandb agent` names the run it launched in
        # WANDB_RUN_ID (an explicit id would detach the run from its sweep); otherwise 8 chars
        # of [a-z0-9], generated here so that the checkpoint can carry them.
        self.run_id = (
            run_id
            or os.environ.get("WANDB_RUN_ID")
            or "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        )
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags) or None,
            name=cfg.name,
            dir=str(run_dir),
            id=self.run_id,
            resume="allow",
            config=config,
        )
        if mode != "online":
            self.run = wandb.init(mode=mode, **kwargs)
            return
        try:
            with _wandb_silenced():  # its retries and login notes would bury the one line below
                self.run = wandb.init(
                    mode="online",
                    settings=wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S),
                    **kwargs,
                )
        except Exception as err:  # wandb raises CommError, UsageError, TimeoutError, ...
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            print(
                f"weyl: wandb online failed ({type(err).__name__}: {first}); logging offline "
                f"under {Path(run_dir) / 'wandb'}, upload later with `wandb sync`",
                file=sys.stderr,
                flush=True,
            )
            self.mode = "offline"
            # The failed attempt still holds the run id inside wandb's service process.
            with contextlib.suppress(Exception):
                wandb.teardown()
            with _wandb_silenced():
                self.run = wandb.init(mode="offline", **kwargs)

    def log(self, step: int, record: dict[str, Any]) -> None:
        """Log the numeric entries of ``record`` at ``step``."""
        data = {k: v for k, v in record.items() if k != "step" and isinstance(v, int | float)}
        self.run.log(data, step=step)

    def close(self, exit_code: int = 0) -> None:
        """Commit the last step's row, then finish the run.

        The offline run file is complete only once wandb's service process has shut down (at
        process exit, or ``wandb.teardown()``): ``finish()`` can return with the last rows still
        buffered (measured under load: the file at 32768 bytes after finish, 36262 after
        teardown, the last step's eval keys missing in between).
        """
        # A row logged with an explicit step stays open until a later step arrives.
        self.run.log({}, commit=True)
        self.run.finish(exit_code=exit_code)


class _wandb_silenced:
    """Set ``WANDB_SILENT`` for the duration of a block (wandb reads it at each call)."""

    def __enter__(self) -> None:
        self._before = os.environ.get("WANDB_SILENT")
        os.environ["WANDB_SILENT"] = "true"

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            os.environ.pop("WANDB_SILENT", None)
        else:
            os.environ["WANDB_SILENT"] = self._before


class MetricLoggers:
    """Fan-out to every enabled sink; a no-op on ranks other than 0."""

    def __init__(
        self,
        jsonl: JsonlLogger | None = None,
        console: ConsoleLog | None = None,
        wandb: WandbLogger | None = None,
    ) -> None:
        self.jsonl = jsonl
        self.console = console
        self.wandb = wandb
        self.start_time = time.time()

    def log(self, record: dict[str, Any]) -> None:
        """Send one record (must contain ``step``) to every sink."""
        if self.jsonl is not None:
            self.jsonl.log(record)
        if self.console is not None:
            self.console.log(record)
        if self.wandb is not None:
            self.wandb.log(record["step"], record)

    def close(self, exit_code: int = 0) -> None:
        """Close every sink."""
        if self.console is not None:
            self.console.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.wandb is not None:
            self.wandb.close(exit_code)
