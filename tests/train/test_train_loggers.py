"""metrics.jsonl truncation on resume, and wandb (offline) run ids carried by checkpoints."""

import json

from tests.train.fixtures import synthetic_factories, tiny_config
from weyl.train import run_training
from weyl.train.checkpoint import latest_checkpoint, load_file
from weyl.train.loggers import JsonlLogger, read_jsonl


def test_jsonl_resume_drops_lines_past_the_checkpoint_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 8, "lo')
    log = JsonlLogger(path, resume_step=4)
    log.log({"step": 5, "loss": float("nan"), "note": "x"})
    log.close()
    records = read_jsonl(path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["loss"] == 0.25 and records[4]["loss"] is None  # strict JSON, no NaN
    JsonlLogger(path, resume_step=None).close()  # a fresh run starts an empty file
    assert path.read_text() == ""


def test_wandb_offline_run_id_is_checkpointed_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    cfg = tiny_config(tmp_path / "run", max_steps=4, ckpt_every=2)
    cfg.logger.wandb.enabled = True
    cfg.logger.wandb.tags = ["test"]
    run_training(cfg, factories=synthetic_factories())
    run_id = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "state.pt")["trainer"][
        "wandb_run_id"
    ]
    assert run_id and list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}"))
    cfg.trainer.max_steps = 6  # continue the same run for two more steps
    run_training(cfg, factories=synthetic_factories())
    ckpt = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "state.pt")
    assert ckpt["step"] == 6 and ckpt["trainer"]["wandb_run_id"] == run_id
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_a_wandb_agent_run_id_is_used_and_then_carried(tmp_path, monkeypatch):
    # `wandb agent` launches each sweep run with WANDB_RUN_ID set; the run must log under it.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_RUN_ID", "agent123")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    cfg = tiny_config(tmp_path / "run", max_steps=2, ckpt_every=2)
    cfg.logger.wandb.enabled = True
    run_training(cfg, factories=synthetic_factories())
    ckpt = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "state.pt")
    assert ckpt["trainer"]["wandb_run_id"] == "agent123"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*-agent123"))
