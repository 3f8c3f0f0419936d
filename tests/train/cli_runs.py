"""Tiny ``weyl train`` runs through the installed console script, for the failure-path tests.

The same overrides composed in-process give the uninterrupted reference run, so a run that
went through a failure can be compared with it bit for bit (CPU, one thread).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEYL = Path(sys.executable).parent / "weyl"

# 12 steps of the 2-layer GPT on 16-character KJV windows; checkpoints at 4, 8, 12.
TINY = [
    "recipe=smoke/gpt_tiny",
    "model.block_size=16",
    "data.block_size=16",
    "trainer.global_batch_size=4",
    "trainer.max_steps=12",
    "trainer.ckpt_every=4",
    "trainer.keep_last=3",
    "trainer.log_every=1",
    "trainer.eval_every=12",
    "trainer.eval_batches=1",
    "trainer.device=cpu",
    "trainer.precision=fp32",
    "diagnostics.enabled=false",
    "logger.progress=false",
]


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Offline, one thread, this checkout's code, no stale test hooks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEYL_", "SLURM_"))}
    env.update(
        PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
        WEYL_DATA_DIR=str(data_dir),
        **extra,
    )
    return env


def weyl_train(
    run_dir: Path, data_dir: Path, *overrides: str, wait: bool = True, **env: str
) -> subprocess.CompletedProcess | subprocess.Popen:
    """``weyl train`` of :data:`TINY` into ``run_dir`` (stdout and stderr kept apart)."""
    cmd = [str(WEYL), "train", *TINY, f"run_dir={run_dir}", *overrides]
    kwargs = dict(cwd=run_dir.parent, env=cli_env(data_dir, **env), text=True)
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    return subprocess.run(cmd, capture_output=True, timeout=240, **kwargs)


def reference_run(run_dir: Path, data_dir: Path, monkeypatch, *overrides: str) -> dict:
    """The same run in-process and uninterrupted, launched as ``weyl train`` launches it."""
    from weyl.train.launch import launch_recipe

    monkeypatch.setenv("WEYL_DATA_DIR", str(data_dir))
    args = [*TINY, f"run_dir={run_dir}", *overrides]
    return launch_recipe(args, ["weyl", "train", *args])


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """Non-empty stderr lines."""
    return [line for line in proc.stderr.splitlines() if line.strip()]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m", read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only); the test is skipped where mount is refused."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_up(folder: Path, leave_kib: int, name: str = "filler") -> Path:
    """Fill ``folder``'s file system until ``leave_kib`` KiB are free; returns the filler."""
    filler = folder / name
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize - leave_kib * 1024
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free))
    return filler
