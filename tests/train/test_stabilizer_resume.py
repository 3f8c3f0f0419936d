"""A run with each new stateful optimizer, killed between checkpoints, resumes bit for bit."""

from __future__ import annotations

import pytest

from tests.train.fixtures import (
    assert_same_trajectory,
    launch,
    step_records,
    synthetic_factories,
    tiny_config,
    worker_env,
)
from weyl.optim.optim_config import OptimConfig
from weyl.train import run_training
from weyl.train.checkpoint import latest_checkpoint


@pytest.mark.parametrize("name", ["gi_adam", "stable_adamw", "muon"])
def test_sigkill_then_resume_replays_bitwise(tmp_path, name):
    kw = dict(max_steps=8, ckpt_every=3, eval_every=4, optim=OptimConfig(name=name, lr=3e-3))
    baseline = run_training(tiny_config(tmp_path / "base", **kw), factories=synthetic_factories())
    assert baseline["state"] == "finished"
    run = tmp_path / "killed"
    cfg = tiny_config(run, **kw)
    r = launch(cfg, env=worker_env(WEYL_TEST_KILL_AT_STEP="5"))  # last checkpoint: step 3
    assert r.returncode == -9, r.stdout[-2000:]
    assert latest_checkpoint(run / "checkpoints").name == "step_00000003"
    resumed = run_training(cfg, factories=synthetic_factories())
    assert resumed["state"] == "finished" and resumed["final_loss"] == baseline["final_loss"]
    assert_same_trajectory(step_records(run), step_records(tmp_path / "base"))
