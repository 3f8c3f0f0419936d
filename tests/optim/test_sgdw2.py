"""SGDW² against torch.optim.SGD and an explicit clipped-SGD loop."""

from __future__ import annotations

import pytest
import torch

from tests.optim.tiny_models import TinyTransformer, exact_sigma, loss_of
from weyl.optim import SGDW2


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


def test_clip_matches_explicit_loop():
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
