"""One run per directory: an OS lock on ``<run_dir>/.lock``, held for as long as the run lives.

``start_run`` takes it before anything is written into the run dir, so two launches into one
directory cannot interleave their config.yaml, metrics and checkpoints: the second fails with
one line naming the holder (the lock file holds ``host``, ``pid`` and ``since`` as text).

The lock is ``fcntl.flock``: the kernel drops it when the holding process dies, however it
dies. A free lock next to a ``status.json`` that still says ``running`` therefore means the
previous run was killed (kill -9, OOM killer, node loss); the next launch takes the lock over
and corrects the status to ``killed`` (see :func:`weyl.train.launch.start_run`).

Limits: only rank 0 locks under torchrun/Slurm (the other ranks share rank 0's directory and
must not block on it); rank 0 may run on another host than an earlier launch, and flock on NFS
is best-effort (Linux maps it to NFS byte-range locks, which work with NFSv4 but not on every
server): on a shared file system treat the lock as a guard against accidents, not a guarantee.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunDirBusy(ValueError):
    """Another live process holds the run dir (a ValueError: one line, exit code 2)."""


def _holder_text() -> str:
    return f"host={platform.node()} pid={os.getpid()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}\n"


def _describe_holder(text: str) -> str:
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if not {"host", "pid", "since"} <= fields.keys():
        return "a process that has not written its name yet"
    return f"pid {fields['pid']} on host {fields['host']}, since {fields['since']}"


class RunDirLock:
    """``with RunDirLock(run_dir):`` holds the run dir; :meth:`acquire` raises RunDirBusy."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, attempts: int = 5, wait_s: float = 0.1) -> None:
        """Take the lock or raise :class:`RunDirBusy` (an OSError when the dir is not writable).

        A few short retries let a reader that probes the lock (``weyl report``) get out of
        the way; a live run holds it for its whole length.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == attempts - 1:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace")
                    os.close(fd)
                    raise RunDirBusy(
                        f"run_dir {self.run_dir} is in use by another weyl run "
                        f"({_describe_holder(holder)}); wait for it to end or choose another "
                        "run_dir=..."
                    ) from None
                time.sleep(wait_s)
        self._fd = fd
        # Who holds it, for the message above. Rewritten in place: the old text's block is
        # reused, so this works on a full disk too; without it the lock still holds.
        text = _holder_text().encode()
        with contextlib.suppress(OSError):
            os.pwrite(fd, text, 0)
            os.ftruncate(fd, len(text))

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with the next opener)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_is_free(run_dir: str | Path) -> bool | None:
    """Whether no process holds ``run_dir``'s lock: None when there is no lock file (a run
    from before the lock existed) or it cannot be probed."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        # A shared probe conflicts only with a holder's exclusive lock; dropped at once.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)


def take_over_killed_run(run_dir: str | Path) -> int | None:
    """With the lock held: when status.json still says ``running``, its run died unrecorded.

    Marks it ``killed`` (status.json, and an event in metrics.jsonl that a resume keeps) and
    returns the step it was killed near; None when the previous run ended properly.
    """
    import json

    from weyl.train.run_status import last_known_step, read_status, write_status

    root = Path(run_dir)
    previous = read_status(root)
    if not previous or previous.get("state") != "running":
        return None
    near = last_known_step(root)
    reason = (
        "the process ended without recording an outcome (kill -9, out of memory, a lost "
        f"node); found by the launch of {time.strftime('%Y-%m-%dT%H:%M:%S')}"
    )
    write_status(root, "killed", near, reason)
    # Stamped at the newest checkpoint's step, which the resume keeps (later lines are dropped).
    ckpt_steps = [
        int(e.name[5:]) for e in (root / "checkpoints").glob("step_*") if e.name[5:].isdigit()
    ]
    event = {"step": max(ckpt_steps, default=0), "event": "killed", "near_step": near}
    metrics = root / "metrics.jsonl"
    with contextlib.suppress(OSError), open(metrics, "a+b") as f:
        f.seek(0, os.SEEK_END)
        torn = f.tell() > 0 and os.pread(f.fileno(), 1, f.tell() - 1) != b"\n"
        # After a line the kill cut short, start a new one rather than glue onto it.
        f.write((b"\n" if torn else b"") + json.dumps(event).encode() + b"\n")
    return near
