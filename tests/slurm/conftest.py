"""A private one-node Slurm for the whole session: its own state dir under tmp and its own
ports (so it never meets a cluster someone else left up), torn down even when a test fails.

Where Slurm is missing and cannot be installed (not root), every test here is skipped with
the reason; as root (CI) ``slurm/local-cluster.sh up`` installs Debian's packages first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.local_slurm import CLUSTER_SCRIPT, LocalSlurm, clean_env, free_port

_CLIENTS = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel")


def _unavailable_reason() -> str | None:
    if all(shutil.which(c) for c in _CLIENTS):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root (slurm/local-cluster.sh up)"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it with"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """Start the local cluster once per session; ``down`` it afterwards whatever happened."""
    reason = _unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("slurm")
    env = clean_env(
        WEYL_SLURM_DIR=str(state_dir),
        WEYL_SLURMCTLD_PORT=str(free_port()),
        WEYL_SLURMD_PORT=str(free_port()),
        SLURM_CONF=str(state_dir / "slurm.conf"),
    )
    cluster = LocalSlurm(state_dir=state_dir, env=env)
    try:
        up = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,  # a first `up` as root may apt-get install slurm-wlm
        )
        if up.returncode != 0:
            pytest.fail(
                f"local-cluster.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}\n"
                f"{cluster.log_tail()}"
            )
        yield cluster
    finally:
        try:
            if (state_dir / "slurm.conf").is_file():
                cluster.cancel_all()  # slurmstepd and the job's processes outlive slurmd
        finally:
            subprocess.run(
                ["bash", str(CLUSTER_SCRIPT), "down"], env=env, capture_output=True, timeout=60
            )


@pytest.fixture(scope="session")
def slurm_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The character-level KJV prepared once, shared by every job (WEYL_DATA_DIR)."""
    from weyl.data.kjv import prepare_kjv

    root = tmp_path_factory.mktemp("data")
    prepare_kjv(root / "kjv_char", "char")
    return root
