"""Checkpoint files: atomic layout, keep-last-k, weights_only loading, RNG round trip."""

import random

import numpy as np
import torch

from weyl.train.checkpoint import (
    CheckpointManager,
    latest_checkpoint,
    load_file,
    rng_state,
    save_file_durably,
    set_rng_state,
)
from weyl.train.distributed import DistContext


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_file_durably(rng_state(), tmp_path / "rng.pt")
    expected = [_draws() for _ in range(3)]
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_file(tmp_path / "rng.pt"))
    assert [_draws() for _ in range(3)] == expected


def test_save_keeps_last_k_and_leaves_no_temp_files(tmp_path):
    mgr = CheckpointManager(tmp_path / "ckpt", DistContext(), keep_last=2)
    for step in (1, 2, 3, 4):
        mgr.save(step, {"w": torch.full((2,), float(step))}, {"data": {"pos": step}})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["step_00000003", "step_00000004"]
    assert sorted(p.name for p in (tmp_path / "ckpt" / "step_00000004").iterdir()) == [
        "manifest.json",
        "rank_00000.pt",
        "state.pt",
    ]
    shared, own = mgr.load(mgr.latest())
    assert shared["step"] == 4 and torch.equal(shared["w"], torch.full((2,), 4.0))
    assert own["data"] == {"pos": 4} and own["rank"] == 0


def test_incomplete_checkpoints_are_ignored(tmp_path):
    mgr = CheckpointManager(tmp_path, DistContext(), keep_last=0)
    mgr.save(6, {"w": torch.ones(1)}, {})
    # what a kill mid-write leaves: a temp dir with partial files, never a step_* without state
    (tmp_path / ".tmp-step_00000009").mkdir()
    (tmp_path / ".tmp-step_00000009" / "rank_00000.pt").write_bytes(b"\x80partial")
    (tmp_path / "step_00000012").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000006"
    assert mgr.load(latest_checkpoint(tmp_path))[0]["step"] == 6
