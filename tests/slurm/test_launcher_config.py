"""The submitit launcher config and the submitit → torch.distributed env hand-over, without a
cluster (the job-level check is in test_slurm_jobs.py)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from weyl.commands import train as cli
from weyl.config.compose import compose_raw


def _launcher(*overrides: str):
    cfg = compose_raw(
        ["recipe=smoke/gpt_tiny", "hydra/launcher=slurm", *overrides], with_hydra=True
    )
    return cfg.hydra


def test_slurm_launcher_is_submitit_with_nothing_site_specific():
    hydra_cfg = _launcher()
    launcher = hydra_cfg.launcher
    assert launcher._target_ == (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    for key in ("partition", "account", "qos", "gpus_per_node", "constraint", "mem_gb"):
        assert launcher[key] is None, key
    assert (launcher.nodes, launcher.tasks_per_node) == (1, 1)
    # Job logs land next to the runs of the sweep (hydra.sweep.dir is run_dir).
    assert launcher.submitit_folder == f"{hydra_cfg.sweep.dir}/.submitit/%j"
    assert OmegaConf.select(hydra_cfg, "sweep.dir") == "runs/smoke_gpt_tiny"


def test_slurm_launcher_resources_are_overridable():
    launcher = _launcher(
        "hydra.launcher.partition=gpu",
        "hydra.launcher.account=proj42",
        "hydra.launcher.timeout_min=1440",
        "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=8",
        "hydra.launcher.tasks_per_node=8",
    ).launcher
    got = {k: launcher[k] for k in ("partition", "account", "timeout_min", "nodes")}
    assert got == {"partition": "gpu", "account": "proj42", "timeout_min": 1440, "nodes": 2}
    assert (launcher.gpus_per_node, launcher.tasks_per_node) == (8, 8)


def test_submitit_task_layout_becomes_torch_distributed_env(monkeypatch):
    # Task 3 of 4 (2 nodes × 2), second task on the second node, as Slurm describes it.
    env = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "812",
        "SLURM_NTASKS": "4",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "MASTER_PORT": "29123",
    }
    monkeypatch.setattr(os, "environ", env)
    assert cli._export_submitit_layout() is True
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")} == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
    }
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("gpu07", "29123")
    assert "CUDA_VISIBLE_DEVICES" not in env  # each rank picks cuda:LOCAL_RANK itself


def test_outside_submitit_the_env_is_left_alone(monkeypatch):
    env = {"SLURM_JOB_ID": "812", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}
    monkeypatch.setattr(os, "environ", env)
    assert cli._export_submitit_layout() is False
    assert "RANK" not in env and "WORLD_SIZE" not in env
