"""A handle on the one-node Slurm that ``slurm/local-cluster.sh`` starts for these tests.

Every client call runs under a timeout (``sinfo``/``squeue`` block ~10 s each while slurmctld
is down) and jobs are watched with ``scontrol show job`` (``sacct`` needs accounting, which
the local cluster does not run).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "slurm" / "local-cluster.sh"
SBATCH_TEMPLATE = REPO / "slurm" / "train.sbatch"
# States after which a job never runs again (a requeued job passes through REQUEUED/PENDING).
TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus any Slurm job context of its own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.update(extra)
    return env


@dataclass
class LocalSlurm:
    """A running local cluster: its state dir, config and the env its clients need."""

    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        """slurmctld/slurmd logs (worth printing when a job misbehaves)."""
        return self.state_dir / "log"

    def run(self, *args: str, timeout: float = 15.0, check: bool = True) -> str:
        """Run a Slurm client command against this cluster; returns its stdout."""
        proc = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path) -> str:
        """Submit a batch job; returns its id."""
        proc = subprocess.run(
            ["sbatch", "--parsable", *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...); {} if unknown."""
        proc = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=15,
        )
        if proc.returncode != 0:
            return {}
        fields: dict[str, str] = {}
        for token in proc.stdout.split():
            key, sep, value = token.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def wait(
        self, job_id: str, timeout: float, until: set[str] | None = None, poll: float = 0.5
    ) -> dict[str, str]:
        """Poll until the job reaches one of ``until`` (default: a terminal state)."""
        until = until or TERMINAL_STATES
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in until:
                return info
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not in {sorted(until)} after {timeout:.0f} s: {info}")

    def cancel_all(self) -> None:
        """Cancel every job of the cluster and give them a moment to leave."""
        self.run("scancel", "--user", str(os.getuid()), check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = self.run("squeue", "-h", "-o", "%i", check=False, timeout=15)
            if not out.strip():
                return
            time.sleep(0.5)

    def log_tail(self, lines: int = 40) -> str:
        """The end of both daemon logs, for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.log_dir / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(parts)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` that carry a training loss, in file order."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in records if "loss" in r and "step" in r]
