"""The crash guard on the device (issue 17): no host sync per update, same verdicts, same crashes.

The reference for the verdicts is the host :class:`CrashGuard` (a plain loop over floats); the
runs use torch's fused AdamW on the CPU, the optimizer that skips a flagged update on the
device (``found_inf``), as :func:`weyl.optim.build_optimizer` makes it on CUDA.
"""

import json
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.train.fixtures import build_synthetic_data, tiny_config
from weyl.models import build_model
from weyl.optim import param_groups
from weyl.optim.optim_config import OptimConfig
from weyl.train import fault_injection, run_training
from weyl.train.checkpoint import latest_checkpoint
from weyl.train.crash_guard import CrashGuard, DeviceCrashGuard
from weyl.train.exit_codes import CRASHED
from weyl.train.loggers import read_jsonl
from weyl.train.runner import Factories
from weyl.train.sharded_state import model_weights
from weyl.train.trainer import Trainer


def _losses(n: int, seed: int) -> list[float]:
    """A loss curve with spikes, NaN/inf and values above a bound, at random places."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        base = 3.0 + math.sin(i / 5) + 0.1 * torch.rand((), generator=g).item()
        r = torch.rand((), generator=g).item()
        out.append(
            float("nan") if r < 0.04 else float("inf") if r < 0.06 else base * (4 if r < 0.2 else 1)
        )
    return out


@pytest.mark.parametrize(
    ("window", "factor", "bound"), [(4, 2.0, None), (5, 3.0, 9.0), (0, 3.0, 5.0), (3, 0.0, None)]
)
def test_device_guard_flags_exactly_what_the_host_guard_flags(window, factor, bound) -> None:
    losses = _losses(120, seed=window)
    host = CrashGuard(window, factor, bound, "3 x ln(20)")
    device = DeviceCrashGuard(CrashGuard(window, factor, bound, "3 x ln(20)"), torch.device("cpu"))
    flagged = 0
    for update, value in enumerate(losses, start=1):
        loss = torch.tensor(value).item()  # the float32 loss a run's host read gave the old guard
        norm = float("nan") if update % 37 == 0 else 1.0
        expected = host.check(loss, norm)
        device.observe(torch.tensor(loss), torch.tensor(norm), update)
        crash, _ = device.host_read()
        if expected is None:
            assert crash is None, update
            continue
        flagged += 1
        assert crash.update == update and crash.reason == expected
        assert crash.loss == loss or math.isnan(loss)
        # the host handles it (stop or roll back): the guard resumes from the host's window
        device.load_state_dict(host.state_dict())
        assert device.state_dict() == host.state_dict()
    assert flagged >= 5


def test_device_guard_stays_halted_on_the_first_flagged_update() -> None:
    guard = DeviceCrashGuard(CrashGuard(spike_window=2, spike_factor=2.0), torch.device("cpu"))
    for update, loss in enumerate([1.0, 1.0, 5.0, float("nan"), 1.0], start=1):
        halted = guard.observe(torch.tensor(loss), torch.tensor(1.0), update)
    assert halted.item() == 1.0
    crash, (extra,) = guard.host_read(torch.tensor(7.0))
    assert crash.update == 3 and crash.reason.startswith("loss spike: 5 > 2 x running median 1")
    assert extra == 7.0
    # nothing after the first flagged update entered the loss window
    assert guard.state_dict()["history"] == [1.0, 1.0]


def _fused_adamw(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), fused=True
    )


def _fused_factories() -> Factories:
    return Factories(build_model, build_synthetic_data, _fused_adamw, None)


class _HostReads(TorchDispatchMode):
    """Counts ``aten::_local_scalar_dense`` (``.item()``, ``float(t)``, ``bool(t)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_no_host_sync_in_an_update_that_does_not_log(tmp_path, monkeypatch) -> None:
    # `.tolist()` reads memory without an aten op, so the one read the trainer makes
    # (DeviceCrashGuard.host_read) is counted as well.
    reads: list[int] = []
    real_read = DeviceCrashGuard.host_read
    monkeypatch.setattr(
        DeviceCrashGuard, "host_read", lambda self, *t: reads.append(1) or real_read(self, *t)
    )
    per_step: dict[int, tuple[int, int]] = {}
    counter = _HostReads()

    class Hooks(fault_injection.NoFaults):
        def after_step(self, step: int) -> None:
            per_step[step] = (counter.count, len(reads))

    monkeypatch.setattr(fault_injection, "hooks", Hooks())
    monkeypatch.setattr(fault_injection, "install_from_env", lambda env=None: None)
    cfg = tiny_config(
        tmp_path, max_steps=12, log_every=4, eval_every=6, ckpt_every=100, spike_window=3
    )
    with counter:
        summary = run_training(cfg, factories=_fused_factories())
    assert summary["state"] == "finished"
    sync_steps = {4, 6, 8, 12}  # log_every 4, eval_every 6, and the last step
    for step in range(2, 13):
        items = per_step[step][0] - per_step[step - 1][0]
        host_reads = per_step[step][1] - per_step[step - 1][1]
        if step in sync_steps:
            assert host_reads == 1, step
        else:
            assert (items, host_reads) == (0, 0), step
    logged = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert logged == [4, 6, 8, 12]


def test_the_adamw_factory_makes_the_optimizer_that_skips_on_the_device() -> None:
    from weyl.optim import build_optimizer

    model = torch.nn.Linear(4, 4)
    cpu = build_optimizer(model, OptimConfig(name="adamw", lr=1e-3))
    assert cpu.defaults["foreach"] and not getattr(cpu, "_step_supports_amp_scaling", False)
    if torch.cuda.is_available():
        cuda = build_optimizer(model.cuda(), OptimConfig(name="adamw", lr=1e-3))
        assert cuda.defaults["fused"] and cuda._step_supports_amp_scaling


@pytest.fixture
def nan_at_5(monkeypatch):
    monkeypatch.setenv("WEYL_TEST_INJECT_NAN_AT_STEP", "5")
    fault_injection.reset()
    yield
    fault_injection.reset()


def test_a_crash_found_at_the_next_log_step_stops_as_if_seen_at_once(
    tmp_path, nan_at_5, monkeypatch
):
    cfg = tiny_config(tmp_path / "run", max_steps=12, log_every=4, ckpt_every=3, eval_every=100)
    seen: list[dict[str, torch.Tensor]] = []
    real = Trainer._on_crash

    def on_crash(self, crash):  # the weights the host holds when it learns of the crash
        seen.append({k: v.detach().clone() for k, v in self.p.model.state_dict().items()})
        return real(self, crash)

    monkeypatch.setattr(Trainer, "_on_crash", on_crash)
    summary = run_training(cfg, factories=_fused_factories())
    assert summary["state"] == "crashed" and summary["exit_code"] == CRASHED
    assert summary["step"] == 5
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["step"] == 5 and "non-finite loss" in status["reason"]
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    crash = [r for r in records if r.get("event") == "crash"]
    assert len(crash) == 1 and crash[0]["step"] == 5 and crash[0]["loss"] is None
    assert max(r["step"] for r in records if "event" not in r) == 4
    # found at the sync of step 6, before its checkpoint: the newest one is still step 3
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_00000003"
    # the weights then were those after update 4: the same run without the NaN saved them
    monkeypatch.delenv("WEYL_TEST_INJECT_NAN_AT_STEP")
    fault_injection.reset()
    ref_cfg = tiny_config(
        tmp_path / "ref", max_steps=12, log_every=4, ckpt_every=4, eval_every=100, keep_last=5
    )
    run_training(ref_cfg, factories=_fused_factories())
    ref = model_weights(tmp_path / "ref" / "checkpoints" / "step_00000004")
    assert seen[0].keys() == ref.keys()
    assert all(torch.equal(seen[0][k], ref[k]) for k in ref)


def test_rollback_after_a_late_found_crash_replays_from_the_good_checkpoint(tmp_path, nan_at_5):
    cfg = tiny_config(
        tmp_path, max_steps=9, log_every=3, ckpt_every=3, eval_every=100, on_crash="rollback"
    )
    summary = run_training(cfg, factories=_fused_factories())
    assert summary["state"] == "finished" and summary["rollbacks"] == 1
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "event" not in r] == [3, 6, 9]
    events = [(r["event"], r["step"]) for r in records if "event" in r]
    assert events == [("crash", 5), ("rollback", 3)]
    assert all(math.isfinite(r["loss"]) for r in records if "event" not in r)
