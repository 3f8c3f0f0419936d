"""The default σ̂₁ estimator inside the optimizer: Algorithm 1's clip with exact σ₁ as reference."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.optim.tiny_models import TinyTransformer, exact_sigma, loss_of
from weyl.optim import AdamW2, OptimConfig
from weyl.value_checks import ConfigError


def _model(seed: int = 0) -> TinyTransformer:
    torch.manual_seed(seed)
    return TinyTransformer()


def test_default_clip_fires_as_exact_algorithm_1_with_a_new_batch_each_step():
    """A new batch each step (ΔW's top direction jumps): the regime power iteration lagged in."""
    lr, tau, b1, b2, eps = 1e-2, 0.003, 0.9, 0.95, 1e-8
    model = _model()
    opt = AdamW2(model.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=0.1, tau=tau)
    names = [n for n, _ in model.named_parameters()]
    errors, agree, fired = [], 0, 0
    for step in range(1, 41):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad(set_to_none=True)
        loss_of(model, step).backward()
        opt.step()
        rep = opt.lr_report()
        for i, (n, p) in enumerate(model.named_parameters()):
            st = opt.state[p]
            t = st["step"].item()
            delta = (st["exp_avg"] / (1 - b1**t)) / ((st["exp_avg_sq"] / (1 - b2**t)).sqrt() + eps)
            limit = tau * max(exact_sigma(before[n]), 1e-2) / exact_sigma(delta)
            expected = min(lr, limit)
            got = rep[f"g0.p{i}"]
            if step > 1:
                errors.append(got["lr_eff"] / expected - 1)
                agree += got["clipped"] == float(limit < lr)
                fired += limit < lr
    errors_t = torch.tensor(errors)
    pairs = len(errors)
    assert pairs == 39 * len(names)
    assert fired > pairs // 2  # the clip is really active
    assert (errors_t.abs() < 0.02).float().mean() >= 0.99
    assert agree >= 0.99 * pairs


def test_state_saved_before_weight_iters_existed_resumes_bitwise():
    """A checkpoint whose param groups lack ``weight_iters`` (older weyl) loads and resumes."""
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, tau=0.003)
    a = _model()
    opt_a = AdamW2(a.parameters(), **kw)
    for s in range(5):
        opt_a.zero_grad()
        loss_of(a, s).backward()
        opt_a.step()
    saved = copy.deepcopy(opt_a.state_dict())
    for g in saved["param_groups"]:
        del g["weight_iters"]
    assert any("sigma_vec_update" in st for st in saved["state"].values())
    b = copy.deepcopy(a)
    opt_b = AdamW2(b.parameters(), **kw)
    opt_b.load_state_dict(saved)
    for model, opt in ((a, opt_a), (b, opt_b)):
        for s in range(5, 10):
            opt.zero_grad()
            loss_of(model, s).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("key", ["power_iters", "weight_iters"])
def test_step_counts_below_one_are_refused_with_the_key(key):
    with pytest.raises(ConfigError, match=f"optim.{key}"):
        OptimConfig(**{key: 0})
    with pytest.raises(ValueError, match=key):
        AdamW2(_model().parameters(), **{key: 0})


def test_defaults_are_the_measured_accurate_setting():
    cfg = OptimConfig()
    assert (cfg.power_iters, cfg.weight_iters) == (3, 1)
    group = AdamW2(_model().parameters()).param_groups[0]
    assert (group["power_iters"], group["weight_iters"]) == (3, 1)
