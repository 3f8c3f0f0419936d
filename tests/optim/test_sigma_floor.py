"""optim.sigma_floor: the literal Algorithm 1 (floor 0) against the documented deviation.

Zero-initialised tensors (biases, LayerNorm β) have σ₁ = 0, so Rule 1 of the paper allows no
step at all; with the floor the rule measures the change against ``sigma_floor`` until the
tensor outgrows it. The reference is the plain per-tensor loop of Algorithm 1 with exact σ₁.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.optim.tiny_models import ReferenceAdamW2, exact_sigma
from weyl.optim import AdamW2
from weyl.optim.optim_config import OptimConfig
from weyl.train.trainer import summarize_lr_report

TAU, FLOOR = 0.1, 1e-2


def _zero_params() -> list[nn.Parameter]:
    """A zero bias-like vector and a zero matrix, as a zero-initialised head would have."""
    return [nn.Parameter(torch.zeros(6)), nn.Parameter(torch.zeros(4, 3))]


def _targets() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, generator=g), torch.randn(4, 3, generator=g)]


def _run(opt, params, steps: int, on_step=None) -> list[list[float]]:
    """σ₁ of each parameter after every step of pulling it towards a fixed target."""
    norms = []
    for _ in range(steps):
        for p in params:
            p.grad = None
        sum((p - t).square().sum() for p, t in zip(params, _targets())).backward()
        opt.step()
        norms.append([exact_sigma(p.detach()) for p in params])
        if on_step is not None:
            on_step()
    return norms


def test_literal_algorithm_1_never_moves_a_zero_tensor():
    ours, ref_params = _zero_params(), _zero_params()
    kw = dict(lr=1.0, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, tau=TAU)
    opt = AdamW2(ours, sigma_floor=0.0, **kw)
    ref = ReferenceAdamW2(ref_params, sigma_floor=0.0, **kw)
    assert _run(opt, ours, 20) == [[0.0, 0.0]] * 20
    assert _run(ref, ref_params, 20) == [[0.0, 0.0]] * 20
    assert all(r["lr_eff"] == 0 and r["floored"] == 0 for r in opt.lr_report().values())


def test_floor_lets_zero_tensors_grow_by_tau_floor_then_by_at_most_one_plus_tau():
    ours, ref_params = _zero_params(), _zero_params()
    kw = dict(lr=1.0, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, tau=TAU)
    opt = AdamW2(ours, sigma_floor=FLOOR, power_iters=3, **kw)
    ref = ReferenceAdamW2(ref_params, sigma_floor=FLOOR, **kw)
    floored: list[int] = []
    logged: list[float] = []

    def count() -> None:
        floored.append(opt.floored_count())
        logged.append(summarize_lr_report(opt.lr_report())["optim/floored"])

    got = _run(opt, ours, 30, on_step=count)
    want = _run(ref, ref_params, 30)
    for t, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=1e-3), t
    # The first step moves each tensor by τ·floor in σ₁, the clip binding from the start;
    # then Weyl's inequality bounds each step's growth by τ·max(σ₁, floor).
    assert got[0] == pytest.approx([TAU * FLOOR] * 2, rel=1e-3)
    prev = [0.0, 0.0]
    for norms in got:
        for n, p in zip(norms, prev):
            assert n - p <= TAU * max(p, FLOOR) * (1 + 1e-3)
        prev = norms
    # Below the floor for ~1/τ steps (both tensors counted), then never again.
    assert floored[0] == 2 and floored[-1] == 0 and floored == sorted(floored, reverse=True)
    assert logged == [float(f) for f in floored]
    assert all(n > FLOOR for n in got[-1])


def test_sigma_floor_is_a_config_key_passed_to_the_optimizer():
    from weyl.optim import build_optimizer

    model = nn.Linear(3, 2)
    opt = build_optimizer(model, OptimConfig(name="adamw2", sigma_floor=0.0))
    assert all(g["sigma_floor"] == 0.0 for g in opt.param_groups)
    assert OptimConfig().sigma_floor == 1e-2
    with pytest.raises(ValueError, match=r"optim\.sigma_floor.*must be >= 0"):
        OptimConfig(sigma_floor=-1.0)
