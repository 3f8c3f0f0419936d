"""The run directory: one per run, shared by every rank, written by rank 0 only.

Layout: ``config.yaml`` (the fully resolved config), ``command.txt`` (the command line of the
latest launch; ``commands.log`` keeps every launch), ``meta.json`` (package version, git
commit, host, world size), plus what the trainer adds (``metrics.jsonl``, ``checkpoints/``,
``status.json``, ``.lock``). A relaunch with a different config keeps the previous one as
``config.<n>.yaml`` so nothing the user saved is lost; a start that fails half-way (a full disk)
leaves every file either as it was or complete.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import weyl
from weyl.durable_files import with_filename, write_durably


def git_commit(path: Path | None = None) -> str:
    """Commit of the weyl source tree (with ``-dirty`` when modified), or ``unknown``."""
    where = path or Path(weyl.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def _write_config(path: Path, new_text: str) -> None:
    """Write config.yaml; a different previous one is kept as ``config.<n>.yaml``.

    The old file is kept by a hard link (no new blocks) and then atomically replaced, so a
    failing start (a full disk) never leaves the run dir without its config.yaml.
    """
    old_text = path.read_text() if path.exists() else None
    if old_text == new_text:
        return
    kept = None
    if old_text is not None:
        n = 1
        while (kept := path.with_name(f"config.{n}.yaml")).exists():
            n += 1
        os.link(path, kept)
    try:
        write_durably(path, new_text)
    except BaseException:
        if kept is not None:  # config.yaml is still the old one: no second copy
            kept.unlink(missing_ok=True)
        raise


def prepare_run_dir(
    run_dir: str | Path,
    resolved: dict[str, Any],
    argv: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Create the run directory and record config, command line, version and commit (rank 0)."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) != 0:
        return root
    _write_config(root / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    command = shlex.join(argv)
    write_durably(root / "command.txt", command + "\n")
    try:
        with open(root / "commands.log", "a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {command}\n")
    except OSError as err:  # a failed write() names no file
        raise with_filename(err, root / "commands.log") from err
    import torch

    meta = {
        "weyl_version": weyl.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "host": platform.node(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }
    write_durably(root / "meta.json", json.dumps(meta, indent=2) + "\n")
    return root
