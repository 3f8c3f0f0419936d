"""Crash guard: detection rules, and an injected NaN in a real (tiny) run."""

import json

import pytest
import torch

from tests.train.fixtures import synthetic_factories, tiny_config
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.train import fault_injection, run_training
from weyl.train.checkpoint import latest_checkpoint
from weyl.train.crash_guard import CrashGuard
from weyl.train.exit_codes import CRASHED
from weyl.train.loggers import read_jsonl
from weyl.train.sharded_state import model_weights


def test_guard_flags_non_finite_and_spikes_over_the_running_median():
    g = CrashGuard(spike_window=4, spike_factor=2.0)
    for loss in (4.0, 1.0, 3.0, 2.0):
        assert g.check(loss, 1.0) is None
    # median(4, 1, 3, 2) = 2.5 → threshold 5.0
    assert g.check(5.0) is None  # not above 5.0; window becomes (1, 3, 2, 5), median 2.5
    assert "spike" in g.check(5.01)
    assert "non-finite loss" in g.check(float("nan"))
    assert "non-finite grad norm" in g.check(1.0, float("inf"))
    restored = CrashGuard(4, 2.0)
    restored.load_state_dict(g.state_dict())
    assert list(restored.history) == [1.0, 3.0, 2.0, 5.0]
    assert CrashGuard(spike_window=0).check(1e9) is None  # spike test disabled


@pytest.fixture
def nan_at_5(monkeypatch):
    monkeypatch.setenv("WEYL_TEST_INJECT_NAN_AT_STEP", "5")
    fault_injection.reset()
    yield
    fault_injection.reset()


def test_injected_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, nan_at_5):
    diag = DiagnosticsConfig(enabled=True, every=100, sec_s=[1, 2], terms=False)
    cfg = tiny_config(tmp_path, max_steps=12, ckpt_every=3, diagnostics=diag)
    summary = run_training(cfg, factories=synthetic_factories(diagnostics=True))
    assert summary["state"] == "crashed" and summary["exit_code"] == CRASHED
    status = json.loads((tmp_path / "status.json").read_text())
    assert (
        status["state"] == "crashed"
        and status["step"] == 5
        and "non-finite loss" in status["reason"]
    )
    records = read_jsonl(tmp_path / "metrics.jsonl")
    crash = [r for r in records if r.get("event") == "crash"]
    assert len(crash) == 1 and crash[0]["step"] == 5 and crash[0]["loss"] is None
    assert any(k.startswith("attn/") for k in crash[0])  # layer diagnostics at the crash
    assert max(r["step"] for r in records if "event" not in r) == 4
    # the diverged update was never applied or saved: newest checkpoint is step 3, intact
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt.name == "step_00000003" and status["last_good_checkpoint"] == str(ckpt)
    assert all(torch.isfinite(v).all() for v in model_weights(ckpt).values())


def test_rollback_resumes_from_the_last_good_checkpoint(tmp_path, nan_at_5):
    cfg = tiny_config(tmp_path, max_steps=9, ckpt_every=3, on_crash="rollback")
    summary = run_training(cfg, factories=synthetic_factories())
    assert summary["state"] == "finished" and summary["rollbacks"] == 1
    records = read_jsonl(tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in records if "event" not in r]
    assert steps == list(range(1, 10))  # no duplicate step lines after the rollback
    events = [(r["event"], r["step"]) for r in records if "event" in r]
    assert events == [("crash", 5), ("rollback", 3)]
    assert json.loads((tmp_path / "status.json").read_text())["rollbacks"] == 1


def _damage_checkpoints_after_saving(monkeypatch, steps: set[int]) -> None:
    """Flip bytes in the middle of state.pt right after the checkpoints of ``steps`` are written."""
    from weyl.train.checkpoint import CheckpointManager

    save = CheckpointManager.save

    def save_then_damage(self, step, shared, rank_state, sharded=None):
        path = save(self, step, shared, rank_state, sharded)
        if step in steps:
            state = path / "state.pt"
            data = bytearray(state.read_bytes())
            data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
            state.write_bytes(bytes(data))
        return path

    monkeypatch.setattr(CheckpointManager, "save", save_then_damage)


def test_rollback_skips_a_damaged_checkpoint_for_the_next_older_good_one(
    tmp_path, nan_at_5, monkeypatch
):
    _damage_checkpoints_after_saving(monkeypatch, {4})
    cfg = tiny_config(tmp_path, max_steps=9, ckpt_every=2, on_crash="rollback")
    summary = run_training(cfg, factories=synthetic_factories())
    assert summary["state"] == "finished" and summary["rollbacks"] == 1
    records = read_jsonl(tmp_path / "metrics.jsonl")
    events = [(r["event"], r["step"]) for r in records if "event" in r]
    assert events == [("crash", 5), ("checkpoint_skipped", 5), ("rollback", 2)]
    skipped = next(r for r in records if r.get("event") == "checkpoint_skipped")
    assert skipped["checkpoint_step"] == 4 and "checksum" in skipped["reason"]
    assert [r["step"] for r in records if "event" not in r] == list(range(1, 10))


def test_rollback_without_an_intact_checkpoint_stops_as_crashed_and_says_so(
    tmp_path, nan_at_5, monkeypatch
):
    _damage_checkpoints_after_saving(monkeypatch, {2, 4})
    cfg = tiny_config(tmp_path, max_steps=9, ckpt_every=2, on_crash="rollback")
    summary = run_training(cfg, factories=synthetic_factories())
    assert summary["state"] == "crashed" and summary["exit_code"] == CRASHED
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["step"] == 5 and status["last_good_checkpoint"] is None
    assert status["reason"].endswith("; no intact checkpoint to roll back to")
    events = [r["event"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "event" in r]
    assert events == ["crash", "checkpoint_skipped", "checkpoint_skipped"]


def test_fault_hooks_stay_the_no_op_unless_a_fault_variable_is_set():
    try:
        fault_injection.reset()
        fault_injection.install_from_env({"WEYL_TEST_WORKERS": "2", "PATH": "/bin"})
        assert type(fault_injection.hooks) is fault_injection.NoFaults
        fault_injection.install_from_env({"WEYL_TEST_INJECT_NAN_AT_STEP": "3"})
        fired = [fault_injection.hooks.replace_loss_with_nan(u) for u in (2, 3, 3)]
        assert fired == [False, True, False]  # once per process
        fault_injection.install_from_env({"WEYL_TEST_INJECT_NAN_AT_STEP": "3"})
        assert not fault_injection.hooks.replace_loss_with_nan(3)  # kept, not re-armed
    finally:
        fault_injection.reset()
