"""A run with wandb on (offline) writes an offline run holding the config, group, tags and
the same metric keys as metrics.jsonl — read back from wandb's own file format."""

import pytest

from weyl.config.compose import load_config
from weyl.report.run_data import load_run
from weyl.report.wandb_offline import read_offline_run
from weyl.train import run_training


def test_offline_wandb_run_has_the_config_and_metric_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    run_dir = tmp_path / "run"
    cfg = load_config(
        [
            "recipe=smoke/gpt_tiny",
            f"run_dir={run_dir}",
            "logger=wandb",
            "logger.progress=false",
            "logger.wandb.group=gpt_tiny",
            "logger.wandb.tags=[adamw2,no-warmup]",
            "trainer.max_steps=20",
            "diagnostics.every=10",
            "optim.lr=0.002",
        ]
    )
    assert run_training(cfg)["state"] == "finished"
    # finish() returns before wandb's service process has flushed the run file; a process that
    # exits shuts the service down first (atexit), which is what teardown does here.
    import wandb

    wandb.teardown()
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    run = read_offline_run(offline[0])
    assert run.group == "gpt_tiny" and set(run.tags) == {"adamw2", "no-warmup"}
    assert run.config["optim"]["lr"] == pytest.approx(0.002)
    assert run.config["optim"]["name"] == "adamw2" and run.config["model"]["n_layer"] == 2
    logged = set().union(*(row.keys() for row in run.history))
    jsonl_keys = load_run(run_dir).metric_keys() - {"step"}
    assert {
        "loss",
        "lr",
        "attn/L00/entropy_mean",
        "attn/L01/sec_s2_mean",
        "terms/L00/wq_sigma1",
    } <= logged
    assert jsonl_keys <= logged  # every metric of the JSONL also reached wandb
