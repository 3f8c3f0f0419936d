"""Start one run: the single path that ``weyl train``, ``weyl demo`` (and sweeps) go through.

:func:`launch_recipe` composes a recipe and its overrides once, validates once and calls
:func:`start_run`; a ``-m`` sweep job (composed by Hydra) calls :func:`start_run` itself.
``start_run`` takes the validated config and its plain, resolved twin (what ``config.yaml``
records) and does, in order, what every launch must do: lock the run directory, check that a relaunch into an existing run
directory continues the *same* run (see :mod:`weyl.train.config_drift`), record the run
directory, train, and return the run summary. Keeping it in one place means a rule about
starting runs holds for every command.

``trainer.resume`` decides what happens to a run directory that already holds a run:

- ``auto``: continue from its newest checkpoint, only when every trajectory key is unchanged;
  otherwise stop before touching anything, naming the keys that differ;
- ``force``: continue even though trajectory keys changed (e.g. a larger ``max_steps``); the
  change is recorded as a ``config_changed`` event in ``metrics.jsonl``;
- ``never``: start from step 0; the previous run is moved aside to ``<run_dir>.old-<time>``,
  never deleted;
- a checkpoint path: start from that checkpoint (a deliberate choice; nothing is compared).

Failures of the run dir itself end in one line on stderr (``WEYL_DEBUG=1`` re-raises):
- another live run holds the dir: :class:`weyl.train.run_lock.RunDirBusy`, exit 2;
- the dir is read-only: "run_dir ... is not writable", exit 1;
- an I/O error at any write (disk full, permission denied): the line names the file and the
  last good checkpoint, status.json records ``failed`` with that reason, ``.tmp-*`` files are
  removed, exit 1 (:data:`weyl.train.exit_codes.ERROR`).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from weyl.config import ConfigError, TrainConfig, build_config, compose_run
from weyl.config.compose import plain_config
from weyl.train.config_drift import describe_changes, trajectory_changes
from weyl.train.exit_codes import ERROR

# I/O failures reported as one line: the run dir or its disk, not a bug.
IO_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
}


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class RunConfigChanged(ConfigError):
    """A relaunch into a run directory whose run has a different trajectory config."""

    def __init__(self, run_dir: Path, changes: dict[str, tuple[Any, Any]]) -> None:
        self.run_dir = run_dir
        self.changes = changes
        super().__init__(
            f"run_dir {run_dir} holds a run with a different config ({describe_changes(changes)});"
            " choose a new name=/run_dir=, trainer.resume=never to start fresh (the old run is"
            " moved aside, not deleted), or trainer.resume=force to continue it under the new"
            " config"
        )


def _is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def has_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds results of an earlier launch (checkpoints or metrics)."""
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and any(p.name.startswith("step_") for p in ckpts.iterdir()):
        return True
    metrics = run_dir / "metrics.jsonl"
    return metrics.is_file() and metrics.stat().st_size > 0


def move_run_aside(run_dir: Path) -> Path:
    """Move the run's files into ``<run_dir>.old-<time>/`` (rank 0); returns that folder."""
    target = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        target = target.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    target.mkdir(parents=True)
    # Entries, not the folder itself: the run directory (and a lock file in it) stays in place.
    for entry in sorted(run_dir.iterdir()):
        if not entry.name.startswith(".lock"):
            shutil.move(str(entry), target / entry.name)
    return target


def with_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """An earlier run's config.yaml with the keys it left at their default filled in, so that
    a key the schema gained since (written out by every new run) is not a change; unchanged
    when it no longer validates (its differences are then reported key by key)."""
    try:
        return plain_config(build_config(old))
    except (ConfigError, KeyError, TypeError, AttributeError):
        return old


def check_relaunch(run_dir: Path, plain: dict[str, Any], resume: str) -> list[dict[str, Any]]:
    """Apply ``trainer.resume`` to an existing run in ``run_dir``; returns events to log.

    Raises :class:`RunConfigChanged` when ``resume=auto`` would continue a different run.
    """
    if resume not in ("auto", "force", "never") or not run_dir.is_dir() or not has_run(run_dir):
        return []
    if resume == "never":
        if _is_rank0():
            kept = move_run_aside(run_dir)
            print(f"weyl: trainer.resume=never: moved the previous run in {run_dir} to {kept}")
        return []
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        changes = {"config.yaml": ("<missing>", "this launch's config")}
    else:
        try:
            old = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{config_path}: not readable YAML ({exc.__class__.__name__})"
            ) from None
        changes = trajectory_changes(with_defaults(old), plain)
    if not changes:
        return []
    if resume == "auto":
        raise RunConfigChanged(run_dir, changes)
    if _is_rank0():
        print(f"weyl: trainer.resume=force: continuing {run_dir} with {describe_changes(changes)}")
    return [{"event": "config_changed", "changes": {k: [a, b] for k, (a, b) in changes.items()}}]


def launch_recipe(
    overrides: list[str], argv: list[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Compose ``overrides`` (``recipe=...``, ``key=value``) once, validate once, and start the
    run (:func:`start_run`); ``argv`` is the command recorded in the run directory.

    A bad config raises :class:`~weyl.config.ConfigError` (one line) before anything is built.
    """
    run = compose_run(overrides)
    return start_run(run.config, run.plain, argv, extra={"choices": run.choices, **(extra or {})})


def start_run(
    typed: TrainConfig,
    plain: dict[str, Any],
    argv: list[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Lock the run directory of ``typed`` (rank 0), check a relaunch, record ``plain`` (the
    resolved config ``typed`` was built from) in the run directory and train; returns the
    summary (``exit_code`` 1, ``state`` ``failed`` after an I/O failure)."""
    from weyl.durable_files import os_error_in
    from weyl.train import run_training
    from weyl.train.run_dir import prepare_run_dir
    from weyl.train.run_lock import RunDirLock, take_over_killed_run

    run_dir = Path(typed.run_dir)
    prog = " ".join(argv[:2]) or "weyl"
    lock = RunDirLock(run_dir) if _is_rank0() else None
    started = False
    try:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            if lock is not None:
                lock.acquire()
                near = take_over_killed_run(run_dir)
                if near is not None:
                    print(
                        f"{prog}: previous run was killed near step {near}; "
                        "status.json corrected from running to killed",
                        file=sys.stderr,
                    )
            events = check_relaunch(run_dir, plain, typed.trainer.resume)
            prepare_run_dir(typed.run_dir, plain, argv, extra=extra)
        except OSError as err:
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or _debug():
                raise
            print(
                f"{prog}: run_dir {run_dir} is not writable ({IO_ERRNOS[err.errno]}); "
                "choose another run_dir=...",
                file=sys.stderr,
            )
            return _failed_summary(run_dir, IO_ERRNOS[err.errno], 0)
        started = True
        return run_training(typed, launch_events=events)
    except BaseException as err:
        from weyl.train.checkpoint import CheckpointError

        if isinstance(err, KeyboardInterrupt):
            err.run_dir = str(run_dir)  # for the caller's one line (weyl.commands.train)

        if isinstance(err, CheckpointError) and lock is not None:
            _record_failure(run_dir, str(err), started)
            raise
        io_err = os_error_in(err)
        if io_err is None or io_err.errno not in IO_ERRNOS:
            raise
        message = _describe_io_failure(io_err, run_dir, started)
        step = _record_failure(run_dir, message, started) if lock is not None else 0
        if _debug() or os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
            raise  # submitit must record a failure, not a result
        print(f"{prog}: {message}", file=sys.stderr)
        return _failed_summary(run_dir, message, step)
    finally:
        if lock is not None:
            lock.release()


def _debug() -> bool:
    return os.environ.get("WEYL_DEBUG") == "1"


def _describe_io_failure(err: OSError, run_dir: Path, started: bool) -> str:
    """The one line: what failed, on which file, and which checkpoint is still good."""
    from weyl.train.checkpoint import latest_checkpoint

    what = IO_ERRNOS[err.errno]
    verb = "writing" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "on"
    where = f"{verb} {err.filename}" if err.filename else f"in {run_dir}"
    latest = latest_checkpoint(run_dir / "checkpoints")
    safe = (
        f"last good checkpoint: step {int(latest.name[5:])} ({latest})"
        if latest is not None
        else "no checkpoint yet"
    )
    if not started:
        safe += "; config.yaml and earlier results are unchanged"
    return f"{what} {where}; {safe}"


def _record_failure(run_dir: Path, reason: str, started: bool) -> int:
    """Rank 0: status.json says ``failed`` (works on a full disk), ``.tmp-*`` files removed;
    returns the step recorded."""
    import contextlib

    from weyl.durable_files import TMP_PREFIX
    from weyl.train.run_status import last_known_step, read_status, write_status

    # Before training started, status.json still describes the previous launch: keep its state.
    extra = {} if started else {"previous_state": (read_status(run_dir) or {}).get("state")}
    step = last_known_step(run_dir)
    with contextlib.suppress(OSError):
        write_status(run_dir, "failed", step, reason, **extra)
    # The lock is held, so every temp file here is a leftover of this process or a dead one.
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(f"{TMP_PREFIX}*") if folder.is_dir() else ():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    return step


def _failed_summary(run_dir: Path, reason: str, step: int) -> dict[str, Any]:
    return {
        "state": "failed",
        "step": step,
        "reason": reason,
        "exit_code": ERROR,
        "run_dir": str(run_dir),
    }
