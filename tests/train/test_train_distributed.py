"""DDP and FSDP2 with 2 gloo processes (torchrun): equivalence and exact resume."""

import json
import os
import random
import re
import signal

import pytest
import torch

from tests.train.fixtures import (
    assert_same_trajectory,
    launch,
    launch_nodes,
    step_records,
    synthetic_factories,
    tiny_config,
    worker_env,
)
from tests.train.test_train_signals import _wait_for_step
from weyl.optim.optim_config import OptimConfig
from weyl.train import run_training
from weyl.train.checkpoint import latest_checkpoint
from weyl.train.sharded_state import model_weights

pytestmark = pytest.mark.distributed

# Global batch 8 = 2 ranks x 2 micro batches of 2 (DDP no_sync on the first), vs a single
# process with 2 micro batches of 4: the same 8 samples per update either way. Grad clipping at
# 1.0 is active (grad norms are ~1.3), so the clip path runs under DDP and FSDP2 (DTensor norm).
DDP_KW = dict(max_steps=12, ckpt_every=3, micro_batch_size=2, eval_every=5, grad_clip=1.0)


@pytest.fixture(scope="module")
def ddp_baseline(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    r = launch(tiny_config(run, **DDP_KW), nproc=2)
    assert r.returncode == 0, r.stdout[-3000:]
    return run, r.stdout


def test_ddp_matches_single_process_and_ranks_agree(ddp_baseline, tmp_path):
    run, stdout = ddp_baseline
    digests = dict(re.findall(r"PARAMS rank=(\d) (\w+)", stdout))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]  # bitwise-identical ranks
    single = tmp_path / "single"
    torch.manual_seed(0)
    summary = run_training(
        tiny_config(single, **{**DDP_KW, "micro_batch_size": 4}), factories=synthetic_factories()
    )
    a, b = step_records(run), step_records(single)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    for step in a:  # same global batch; only the all-reduce summation order differs
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-5, abs=1e-6)
    assert a[10]["eval/loss"] == pytest.approx(b[10]["eval/loss"], rel=1e-5)
    w_ddp = model_weights(latest_checkpoint(run / "checkpoints"))
    w_one = model_weights(latest_checkpoint(single / "checkpoints"))
    for name in w_one:
        assert torch.allclose(w_ddp[name], w_one[name], rtol=1e-4, atol=1e-6), name
    assert summary["state"] == "finished"


def test_ddp_sigkill_at_three_points_and_a_one_rank_signal_resume_bitwise(ddp_baseline, tmp_path):
    run = tmp_path / "killed"
    cfg = tiny_config(run, **DDP_KW)

    def newest():
        ckpt = latest_checkpoint(run / "checkpoints")
        # each rank's data-stream and RNG state is in the checkpoint
        assert sorted(p.name for p in ckpt.glob("rank_*.pt")) == ["rank_00000.pt", "rank_00001.pt"]
        return int(ckpt.name.split("_")[1])

    for hook, k, expected in (
        ("WEYL_TEST_KILL_AT_STEP", 4, 3),
        ("WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP", 6, 3),
    ):
        r = launch(cfg, nproc=2, env=worker_env(**{hook: str(k)}))
        assert r.returncode != 0, r.stdout[-3000:]
        assert newest() == expected, (hook, k)
    # SIGUSR1 to rank 1 only, at a random step: both ranks agree to stop at the same boundary
    # Steps <= 6 are still in metrics.jsonl from the killed launches until the resume truncates
    # it, so only a later step proves the new launch is running; stale pid files go first.
    at = random.Random().randint(7, 9)
    for stale in run.glob("pid.rank*"):
        stale.unlink()
    proc = launch(cfg, nproc=2, env=worker_env(WEYL_TEST_STEP_SLEEP="0.3"), wait=False)
    try:
        _wait_for_step(run / "metrics.jsonl", at, proc)
        os.kill(int((run / "pid.rank1").read_text()), signal.SIGUSR1)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "preempted", out[-3000:]
    assert newest() == status["step"] and at <= status["step"] < 12
    if status["step"] < 11:  # k=11: the third SIGKILL point, after the preempted run's resume
        r = launch(cfg, nproc=2, env=worker_env(WEYL_TEST_KILL_AT_STEP="11"))
        assert r.returncode != 0, r.stdout[-3000:]
        assert newest() == (9 if status["step"] < 9 else status["step"])
    r = launch(cfg, nproc=2)
    assert r.returncode == 0, r.stdout[-3000:]
    assert_same_trajectory(step_records(run), step_records(ddp_baseline[0]))


def test_fsdp2_with_adamw2_matches_ddp(ddp_baseline, tmp_path):
    run = tmp_path / "fsdp"
    cfg = tiny_config(run, strategy="fsdp", **DDP_KW)
    assert cfg.optim.name == "adamw2"
    r = launch(cfg, nproc=2)
    assert r.returncode == 0, r.stdout[-3000:]
    a, b = step_records(run), step_records(ddp_baseline[0])
    assert sorted(a) == sorted(b)
    for step in a:
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-4, abs=1e-5), step
    # the FSDP checkpoint's shards read back as full weights without a process group
    w_fsdp = model_weights(latest_checkpoint(run / "checkpoints"))
    w_ddp = model_weights(latest_checkpoint(ddp_baseline[0] / "checkpoints"))
    assert set(w_fsdp) == set(w_ddp)
    for name in w_ddp:
        assert w_fsdp[name].shape == w_ddp[name].shape
        assert torch.allclose(w_fsdp[name], w_ddp[name], rtol=1e-3, atol=1e-5), name


def test_two_nodes_through_rendezvous_match_one_node_of_two(ddp_baseline, tmp_path):
    # torchrun --nnodes=2 with c10d rendezvous, one process per "node": the multi-node path
    # (ranks assigned by the rendezvous, LOCAL_RANK 0 on both) on one machine.
    run = tmp_path / "nodes"
    outs = launch_nodes(tiny_config(run, **DDP_KW), nnodes=2)
    digests = dict(m for out in outs for m in re.findall(r"PARAMS rank=(\d) (\w+)", out))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    ckpt = latest_checkpoint(run / "checkpoints")
    assert sorted(p.name for p in ckpt.glob("rank_*.pt")) == ["rank_00000.pt", "rank_00001.pt"]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    a, b = step_records(run), step_records(ddp_baseline[0])
    assert sorted(a) == sorted(b)
    for step in a:  # the same two gloo ranks as on one node: the same sums
        assert a[step]["loss"] == b[step]["loss"], step


def test_fsdp2_trains_a_sigma_reparam_model_like_one_process(tmp_path):
    # σReparam's γ and its power-iteration buffers under fully_shard (γ was a 0-d parameter,
    # which FSDP2 refuses); reference: one process with the same global batch.
    kw = dict(DDP_KW, max_steps=6, sigma_reparam=True, optim=OptimConfig(name="adamw", lr=3e-3))
    run = tmp_path / "fsdp_sr"
    r = launch(tiny_config(run, strategy="fsdp", **kw), nproc=2)
    assert r.returncode == 0, r.stdout[-3000:]
    single = tmp_path / "single_sr"
    run_training(
        tiny_config(single, **{**kw, "micro_batch_size": 4}), factories=synthetic_factories()
    )
    a, b = step_records(run), step_records(single)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-5, abs=1e-6), step
