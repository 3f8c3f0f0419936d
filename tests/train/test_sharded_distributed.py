"""Sharded (DCP) checkpoints under FSDP2 with gloo: kill -9 mid-save, bitwise resume, async
saves, and resuming a 2-rank checkpoint on 1 and on 4 ranks."""

import shutil
from pathlib import Path

import pytest
import torch

from tests.train.fixtures import (
    assert_same_trajectory,
    launch,
    step_records,
    tiny_config,
    worker_env,
)
from weyl.train.checkpoint import latest_checkpoint, step_dir_name
from weyl.train.sharded_state import read_sharded_state

pytestmark = pytest.mark.distributed

# Global batch 8 = 2 ranks x 2 micro batches x 2 accumulation steps; 1 rank: 2 x 4; 4 ranks: 2 x 1.
KW = dict(max_steps=12, micro_batch_size=2, eval_every=6, grad_clip=1.0, keep_last=4)
# Generous: a loaded 2-core machine starves torchrun's workers.
TIMEOUT = 400
# Resumed at another world size, the same samples meet other summation orders (all-reduce of
# gradients, FSDP2's reduce-scatter, the distributed power iteration): measured max relative
# loss difference on steps 7-12 is printed by the test (8.9e-8 for 2 -> 1 and 2 -> 4 on 2026-11-30);
# this is the bound asserted.
LOSS_RTOL = 1e-5


def _samples(log_dir: Path) -> list[int]:
    found: list[int] = []
    for f in sorted(log_dir.glob("samples.rank*.txt")):
        for line in f.read_text().split("\n"):
            found += [int(x) for x in line.split()]
    return found


@pytest.fixture(scope="module")
def fsdp_baseline(tmp_path_factory):
    """FSDP2 x 2, 12 steps, synchronous checkpoints at 6 and 12, samples logged."""
    root = tmp_path_factory.mktemp("fsdp")
    run, log = root / "run", root / "samples"
    log.mkdir()
    cfg = tiny_config(run, strategy="fsdp", ckpt_every=6, **KW)
    r = launch(cfg, nproc=2, env=worker_env(WEYL_TEST_SAMPLE_LOG=str(log)), timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout[-3000:]
    # every global sample of the 12 updates exactly once, over both ranks
    assert sorted(_samples(log)) == list(range(12 * 8))
    return run


def test_fsdp2_kill_during_an_async_save_then_resume_bitwise(fsdp_baseline, tmp_path):
    run = tmp_path / "killed"
    cfg = tiny_config(run, strategy="fsdp", ckpt_every=3, checkpoint_async=True, **KW)
    # rank 0 dies in the background commit of step 6: shards and rank files are written,
    # state.pt, manifest and the rename are not
    env = worker_env(WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP="6")
    r = launch(cfg, nproc=2, env=env, timeout=TIMEOUT)
    assert r.returncode != 0, r.stdout[-3000:]
    assert latest_checkpoint(run / "checkpoints").name == step_dir_name(3)
    assert not (run / "checkpoints" / step_dir_name(6)).exists()
    r = launch(cfg, nproc=2, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout[-3000:]
    assert_same_trajectory(step_records(run), step_records(fsdp_baseline))
    # the async run's files: the sync run's names, and the same tensors
    a = latest_checkpoint(run / "checkpoints")
    s = latest_checkpoint(fsdp_baseline / "checkpoints")
    assert a.name == s.name == step_dir_name(12)
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in s.iterdir())
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= {p.name for p in a.iterdir()}
    _assert_same_state(read_sharded_state(a), read_sharded_state(s))
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def _assert_same_state(a: dict, b: dict) -> None:
    assert set(a["model"]) == set(b["model"])
    for name, value in b["model"].items():
        assert torch.equal(a["model"][name], value), name
    assert set(a["optim"]["state"]) == set(b["optim"]["state"])
    for fqn, entry in b["optim"]["state"].items():
        assert set(a["optim"]["state"][fqn]) == set(entry), fqn
        for key, value in entry.items():
            assert torch.equal(a["optim"]["state"][fqn][key], value), (fqn, key)


def _resume_on(world: int, fsdp_baseline: Path, tmp_path: Path) -> None:
    run, log = tmp_path / f"on{world}", tmp_path / f"samples{world}"
    log.mkdir()
    shutil.copytree(fsdp_baseline, run)
    shutil.rmtree(run / "checkpoints" / step_dir_name(12))  # resume from step 6
    saved = read_sharded_state(run / "checkpoints" / step_dir_name(6))
    dump = tmp_path / f"restored{world}.pt"
    cfg = tiny_config(run, strategy="fsdp", ckpt_every=6, **KW)
    env = worker_env(WEYL_TEST_SAMPLE_LOG=str(log), WEYL_TEST_DUMP_RESTORED=str(dump))
    r = launch(cfg, nproc=world, env=env, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout[-3000:]
    # parameters and optimizer state (moments, steps, AdamW²'s vectors) as saved, resharded
    restored = torch.load(dump, weights_only=True)
    _assert_same_state(restored, saved)
    assert any("sigma_vec_weight" in e for e in saved["optim"]["state"].values())
    # no sample repeated or skipped: updates 7-12 are global samples 48..95, each once
    assert sorted(_samples(log)) == list(range(48, 96))
    a, b = step_records(run), step_records(fsdp_baseline)
    assert sorted(a) == sorted(b) == list(range(1, 13))
    worst = max(abs(a[s]["loss"] - b[s]["loss"]) / abs(b[s]["loss"]) for s in range(7, 13))
    print(f"2 -> {world} ranks: max relative loss difference on steps 7-12: {worst:.2e}")
    for step in range(7, 13):
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=LOSS_RTOL), step


def test_a_two_rank_checkpoint_resumes_on_one_rank(fsdp_baseline, tmp_path):
    _resume_on(1, fsdp_baseline, tmp_path)


def test_a_two_rank_checkpoint_resumes_on_four_ranks(fsdp_baseline, tmp_path):
    _resume_on(4, fsdp_baseline, tmp_path)
