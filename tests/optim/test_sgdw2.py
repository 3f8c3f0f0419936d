"""SGDW² against torch.optim.SGD and an explicit clipped-SGD loop."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.optim.tiny_models import TinyTransformer, exact_sigma, loss_of
from weyl.optim import SGDW2, build_optimizer
from weyl.optim.optim_config import OptimConfig


def _model() -> TinyTransformer:
    torch.manual_seed(0)
    return TinyTransformer()


@pytest.mark.parametrize("nesterov", [False, True])
def test_tau_off_no_decay_equals_torch_sgd(nesterov):
    a, b = _model(), _model()
    ours = SGDW2(a.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov, tau=None)
    ref = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov, foreach=True)
    for s in range(20):
        for m, o in ((a, ours), (b, ref)):
            o.zero_grad()
            loss_of(m, s).backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batched", [False, True], ids=["cpu-path", "accelerator-path"])
def test_clip_matches_explicit_loop(monkeypatch, batched):
    # batched: the accelerator path (workspace, per-buffer factors) forced onto the CPU.
    monkeypatch.setattr(
        importlib.import_module("weyl.optim.spectral_norm"), "_FORCE_STACKED", batched
    )
    a, b = _model(), _model()
    lr, mu, wd, tau = 0.1, 0.9, 0.05, 0.01
    ours = SGDW2(a.parameters(), lr=lr, momentum=mu, weight_decay=wd, tau=tau, power_iters=3)
    bufs = [None] * len(list(b.parameters()))
    for s in range(30):
        for m in (a, b):
            for p in m.parameters():
                p.grad = None
            loss_of(m, 0).backward()
        ours.step()
        with torch.no_grad():
            lrs = []
            for i, p in enumerate(b.parameters()):
                bufs[i] = p.grad.clone() if bufs[i] is None else bufs[i] * mu + p.grad
                alpha = min(lr, tau * max(exact_sigma(p), 1e-2) / exact_sigma(bufs[i]))
                lrs.append(alpha)
                p.sub_(alpha * bufs[i] + alpha * wd * p)
        if s >= 10:
            rep = ours.lr_report()
            assert [rep[f"g0.p{i}"]["lr_eff"] for i in range(len(lrs))] == pytest.approx(
                lrs, rel=0.02
            )
    assert sum(x < lr for x in lrs) >= len(lrs) // 2
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0.02, atol=1e-3)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def _train_mlp(model, opt, steps: int) -> None:
    for s in range(steps):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def test_sgd_baseline_is_sgdw2_without_the_clip_and_decays_decoupled():
    """optim=sgd and optim=sgdw2 with tau=None take the same steps at weight decay > 0, and
    both are SGD-momentum with decoupled decay: p ← p − lr·b − lr·wd·p (the rule SGDW² clips).
    """
    lr, mu, wd = 0.1, 0.9, 0.05
    models = {name: _mlp() for name in ("sgd", "sgdw2", "loop", "torch")}
    for name in ("sgd", "sgdw2"):
        cfg = OptimConfig(name=name, lr=lr, momentum=mu, weight_decay=wd, tau=None)
        _train_mlp(models[name], build_optimizer(models[name], cfg), 20)
    # The plain loop: decay on matrices only (build_optimizer's no-decay rule for biases).
    loop = models["loop"]
    bufs: dict[int, torch.Tensor] = {}
    for s in range(20):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(s))
        loop.zero_grad()
        loop(x).square().mean().backward()
        with torch.no_grad():
            for i, p in enumerate(loop.parameters()):
                bufs[i] = p.grad.clone() if i not in bufs else mu * bufs[i] + p.grad
                decay = wd if p.ndim >= 2 else 0.0
                p.copy_(p - lr * bufs[i] - lr * decay * p)
    coupled = torch.optim.SGD(
        [
            {"params": [p for p in models["torch"].parameters() if p.ndim >= 2]},
            {"params": [p for p in models["torch"].parameters() if p.ndim < 2], "weight_decay": 0},
        ],
        lr=lr,
        momentum=mu,
        weight_decay=wd,
    )
    _train_mlp(models["torch"], coupled, 20)
    for pa, pb, pc in zip(*(models[n].parameters() for n in ("sgd", "sgdw2", "loop"))):
        assert torch.equal(pa, pb)
        torch.testing.assert_close(pa, pc, rtol=1e-5, atol=1e-6)
    # torch's SGD couples the decay into the momentum: a different optimizer.
    weights = [(a, d) for a, d in zip(models["sgd"].parameters(), models["torch"].parameters())]
    assert any(not torch.allclose(a, d, rtol=1e-3, atol=1e-4) for a, d in weights if a.ndim >= 2)
