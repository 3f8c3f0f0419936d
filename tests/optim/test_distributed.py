"""AdamW² under DDP and FSDP2 with 2 CPU processes (gloo), launched through torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(mode: str, tmp_path: Path) -> None:
    repo = Path(__file__).parents[2]
    # this checkout's weyl, not whichever one the venv has installed
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{repo / 'src'}{os.pathsep}{repo}")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", str(WORKER), mode, str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "ok").exists()


@pytest.mark.distributed
def test_ddp_ranks_stay_bitwise_identical(tmp_path):
    _run("ddp", tmp_path)


@pytest.mark.distributed
def test_fsdp2_matches_single_process(tmp_path):
    _run("fsdp", tmp_path)
