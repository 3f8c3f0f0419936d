"""Exact resume after SIGKILL (single process), including a kill in the middle of a checkpoint."""

from tests.train.fixtures import (
    assert_same_trajectory,
    launch,
    step_records,
    synthetic_factories,
    tiny_config,
    worker_env,
)
from weyl.train import run_training
from weyl.train.checkpoint import latest_checkpoint


def test_sigkill_at_three_points_then_resume_replays_bitwise(tmp_path):
    # global batch 8 as 2 micro batches of 4: gradient accumulation is part of the replay
    kw = dict(max_steps=12, ckpt_every=3, micro_batch_size=4, eval_every=5)
    baseline = run_training(tiny_config(tmp_path / "base", **kw), factories=synthetic_factories())
    assert baseline["state"] == "finished"

    run = tmp_path / "killed"
    cfg = tiny_config(run, **kw)
    # k=4: killed between checkpoints → resumes from step 3
    r = launch(cfg, env=worker_env(WEYL_TEST_KILL_AT_STEP="4"))
    assert r.returncode == -9, r.stdout[-2000:]
    assert latest_checkpoint(run / "checkpoints").name == "step_00000003"
    # k=6: killed while writing checkpoint 6 → the partial write is ignored, step 3 stays newest
    r = launch(cfg, env=worker_env(WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP="6"))
    assert r.returncode == -9, r.stdout[-2000:]
    assert (run / "checkpoints" / ".tmp-step_00000006").is_dir()
    assert latest_checkpoint(run / "checkpoints").name == "step_00000003"
    # k=11: resumes from 3 again, checkpoints 6 and 9, killed after 11 → resumes from 9
    r = launch(cfg, env=worker_env(WEYL_TEST_KILL_AT_STEP="11"))
    assert r.returncode == -9, r.stdout[-2000:]
    assert latest_checkpoint(run / "checkpoints").name == "step_00000009"
    resumed = run_training(cfg, factories=synthetic_factories())
    assert resumed["state"] == "finished" and resumed["final_loss"] == baseline["final_loss"]
    assert_same_trajectory(step_records(run), step_records(tmp_path / "base"))
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the leftover was cleaned up
