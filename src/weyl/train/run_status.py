"""``<run_dir>/status.json``: the run's outcome, for schedulers, sweeps and ``weyl report``.

``{"state": "running"|"finished"|"crashed"|"preempted"|"interrupted"|"killed"|"failed",
"step": N, "reason": str|None, ...}``: ``interrupted`` is a Ctrl-C stop, ``killed`` a process
that died without a word (found by the next launch), ``failed`` an error that is not a
divergence (an I/O error, a bug);
written atomically (temp file + rename) by rank 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from weyl.durable_files import replace_durably

RUN_STATES = ("running", "finished", "crashed", "preempted", "interrupted", "killed", "failed")


def write_status(
    run_dir: str | Path, state: str, step: int, reason: str | None = None, **extra: Any
) -> None:
    """Atomically replace ``status.json`` with the given state."""
    if state not in RUN_STATES:
        raise ValueError(f"run state {state!r} is unknown; use one of {RUN_STATES}")
    path = Path(run_dir) / "status.json"
    record = {"state": state, "step": int(step), "reason": reason, "time": time.time(), **extra}
    text = json.dumps(record, indent=1, allow_nan=False, default=str)
    replace_durably(path, path.with_name(".tmp-status.json"), lambda f: f.write(text.encode()))


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The last status written, or None when there is none."""
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.is_file() else None
