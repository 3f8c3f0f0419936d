"""The accelerator step's kernel count and host reads, measured on the CPU (issue 17, item 1).

The accelerator path runs here forced onto the CPU (``_FORCE_STACKED``) and on the ``meta``
device, where tensors carry no data: any value the step read back to the host would raise there.
Counts come from ``benchmarks/optimizer_step.py`` (``count_step_ops``; the definition of a
"kernel" is in its docstring).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest
import torch

from tests.optim.tiny_models import ReferenceAdamW2, TinyTransformer, loss_of
from weyl.optim import SGDW2, AdamW2

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "optimizer_step.py"
# Measured 210 at GPT-2-S and GPT-2-L structure (75 and 219 tensors; 1637 and 1973 before the
# workspace): ~140 of them are the Lanczos recurrence's small ops and the Ritz vector.
_KERNEL_BOUND = 215


def _bench():
    spec = importlib.util.spec_from_file_location("optimizer_step_bench", _BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


def test_batched_step_kernels_do_not_grow_with_depth_and_read_nothing_back(bench):
    # GPT-2 structure (wte, wpe, 4 tensors per layer, two param groups) at width 32: the count
    # depends on the tensors' column counts, not on their number or size.
    shallow = bench.profile_step("cpu", width=32, layers=2, force_batched=True)
    deep = bench.profile_step("cpu", width=32, layers=12, force_batched=True)
    assert deep["tensors"] > shallow["tensors"]
    assert deep["kernels"] == shallow["kernels"] <= _KERNEL_BOUND
    assert deep["syncs"] == shallow["syncs"] == 0
    # Conversions are per group and step (record rows, bf16 buffers), never per tensor.
    assert deep["conversions"] == shallow["conversions"]


def test_cpu_path_reads_no_device_value(bench):
    counts = bench.profile_step("cpu", width=32, layers=2)
    assert counts["syncs"] == 0


@pytest.mark.parametrize("make", [AdamW2, SGDW2])
def test_batched_step_runs_on_meta_where_any_host_read_would_raise(make):
    shapes = [(64, 32), (32,), (96, 32), (32, 128), (1, 10, 32), (0, 8)]
    params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in shapes]
    for p in params:
        p.grad = torch.empty_like(p)
    groups = [
        {"params": params[:3], "weight_decay": 0.1},
        {"params": params[3:], "weight_decay": 0.0},
    ]
    opt = make(groups, lr=1e-3)
    for _ in range(3):  # the first step (fresh vectors) and two ordinary ones
        opt.step()
    assert all(p.device.type == "meta" for p in params)


@pytest.mark.parametrize("wd", [0.1, 0.0])
def test_batched_step_matches_plain_loop_reference(monkeypatch, wd):
    """The accelerator path, forced on the CPU, against the independent per-tensor reference."""
    monkeypatch.setattr(importlib.import_module("weyl.optim.spectral_norm"), "_FORCE_STACKED", True)
    torch.manual_seed(0)
    a = TinyTransformer()
    torch.manual_seed(0)
    b = TinyTransformer()
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd, tau=0.003)
    ours = AdamW2(a.parameters(), power_iters=3, sigma_floor=1e-2, **kw)
    ref = ReferenceAdamW2(b.parameters(), sigma_floor=1e-2, **kw)
    for s in range(40):
        for m, o in ((a, ours), (b, ref)):
            for p in m.parameters():
                p.grad = None
            loss_of(m, 0).backward()  # full batch, as the CPU path's reference test
            o.step()
        if s >= 10:
            rep = ours.lr_report()
            got = [rep[f"g0.p{i}"]["lr_eff"] for i in range(len(ref.lr_eff))]
            assert got == pytest.approx(ref.lr_eff, rel=0.02), s
    assert ours.scratch_bytes() > 0  # the workspace is kept between steps
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0.02, atol=1e-3, msg=name)
