"""``<run_dir>/status.json``: the run's outcome, for schedulers, sweeps and ``weyl report``.

``{"state": "running"|"finished"|"crashed"|"preempted"|"interrupted"|"killed"|"failed",
"step": N, "reason": str|None, ...}``: ``interrupted`` is a Ctrl-C stop, ``killed`` a process
that died without a word (found by the next launch), ``failed`` an error that is not a
divergence (an I/O error, a bug);
written atomically (temp file + rename) by rank 0. When the disk is full the temp file cannot
be created, so the record is rewritten in place into the blocks status.json already holds (a
record is a few hundred bytes, one block; measured to work on a full tmpfs): the outcome of a
run that failed *because* the disk filled up is still recorded.
"""

from __future__ import annotations

import errno
import json
import re
import time
from pathlib import Path
from typing import Any

from weyl.durable_files import overwrite_in_place, write_durably

RUN_STATES = ("running", "finished", "crashed", "preempted", "interrupted", "killed", "failed")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# A record must fit in one block to be rewritable on a full disk; long reasons are cut to this.
_MAX_REASON = 1500


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=1, allow_nan=False, default=str).encode()


def write_status(
    run_dir: str | Path, state: str, step: int, reason: str | None = None, **extra: Any
) -> None:
    """Atomically replace ``status.json`` with the given state (in place when the disk is full)."""
    if state not in RUN_STATES:
        raise ValueError(f"run state {state!r} is unknown; use one of {RUN_STATES}")
    path = Path(run_dir) / "status.json"
    if reason is not None and len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 3] + "..."
    record = {"state": state, "step": int(step), "reason": reason, "time": time.time(), **extra}
    data = _encode(record)
    try:
        write_durably(path, data)
    except OSError as err:
        if err.errno not in _NO_SPACE or not path.is_file():
            raise
        overwrite_in_place(path, data)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The last status written, or None when there is none (or it is unreadable)."""
    path = Path(run_dir) / "status.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


_STEP_DIR = re.compile(r"^step_(\d+)$")


def last_known_step(run_dir: str | Path) -> int:
    """The furthest step any record of the run reached: status.json, checkpoints, metrics.jsonl."""
    root = Path(run_dir)
    steps = [int((read_status(root) or {}).get("step") or 0)]
    ckpt = root / "checkpoints"
    if ckpt.is_dir():
        steps += [int(m.group(1)) for e in ckpt.iterdir() if (m := _STEP_DIR.match(e.name))]
    metrics = root / "metrics.jsonl"
    if metrics.is_file():
        with open(metrics, "rb") as f:  # the tail is enough: steps only grow
            f.seek(max(0, f.seek(0, 2) - 65536))
            for line in f.read().splitlines():
                try:
                    steps.append(int(json.loads(line)["step"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by the kill, or cut by the seek
    return max(steps)
