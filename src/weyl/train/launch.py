"""Start one run: the single path that ``weyl train``, ``weyl demo`` (and sweeps) go through.

``start_run`` takes the composed, resolved config as plain data and does, in order, what every
launch must do: validate, lock the run directory, record it, train, and return the run
summary. Keeping it in one place means a rule about starting runs (locking the run dir,
refusing to resume under a different config, mapping outcomes to exit codes) is written once
and holds for every command.

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
from pathlib import Path
from typing import Any

from weyl.config.validate import validate
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


def start_run(
    plain: dict[str, Any], argv: list[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate ``plain``, lock and prepare its run directory (rank 0) and train; returns the
    summary (``exit_code`` 1 and ``state`` ``failed`` after an I/O failure)."""
    from weyl.durable_files import os_error_in
    from weyl.train import run_training
    from weyl.train.run_dir import prepare_run_dir
    from weyl.train.run_lock import RunDirLock, take_over_killed_run

    typed = validate(plain)
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
        return run_training(typed)
    except BaseException as err:
        from weyl.train.checkpoint import CheckpointError

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

    from weyl.train.run_status import last_known_step, read_status, write_status

    # Before training started, status.json still describes the previous launch: keep its state.
    extra = {} if started else {"previous_state": (read_status(run_dir) or {}).get("state")}
    step = last_known_step(run_dir)
    with contextlib.suppress(OSError):
        write_status(run_dir, "failed", step, reason, **extra)
    # The lock is held, so every temp file here is a leftover of this process or a dead one.
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".tmp-*") if folder.is_dir() else ():
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
