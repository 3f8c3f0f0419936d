"""The warmup-free stabilizers as optimizers: RAdam, GI-Adam, StableAdamW, Muon + AdamW.

Each is checked against its published definition written out here as a plain loop, not
against the optimizer's own output.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from weyl.models.gpt import GPT
from weyl.models.model_config import GPTModelConfig
from weyl.optim import GIAdam, MuonWithAdamW, build_optimizer
from weyl.optim.optim_config import OptimConfig
from weyl.train.schedule import LRSchedule
from weyl.value_checks import ConfigError


def _gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11))


def _lm_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 11, (4, 8), generator=g)
    logits = model(idx)
    nn.functional.cross_entropy(logits.flatten(0, 1), idx.roll(-1, 1).flatten()).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_radam_is_torchs_with_decoupled_decay():
    p = nn.Parameter(torch.full((3,), 2.0))
    opt = build_optimizer(
        nn.ParameterDict({"w": p}).requires_grad_(),
        OptimConfig(name="radam", lr=0.1, weight_decay=0.5),
    )
    assert isinstance(opt, torch.optim.RAdam)
    # 1-D tensors are in the no-decay group; give the decay to it for this check.
    opt.param_groups[0]["weight_decay"] = 0.5
    assert all(g["decoupled_weight_decay"] for g in opt.param_groups)
    p.grad = torch.zeros_like(p)
    opt.step()
    # g = 0 ⇒ m = 0: only the decoupled decay θ·(1 − lr·λ) moves the weights (coupled L2
    # would feed λθ into Adam's moments and move them by a rectified Adam step instead).
    torch.testing.assert_close(p.detach(), torch.full((3,), 2.0 * (1 - 0.1 * 0.5)))


def _gi_adam_reference(p0, grads, lr, betas, eps, wd):
    """Kalra & Barkeshli's GI-Adam as a plain loop: AdamW with v₀ = g₀²."""
    b1, b2 = betas
    p, m, v = p0.clone(), torch.zeros_like(p0), grads[0].square()
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps)
    return p, m, v


def test_gi_adam_state_after_first_step_and_trajectory():
    torch.manual_seed(0)
    p0 = torch.randn(4, 3)
    grads = [torch.randn(4, 3) for _ in range(4)]
    p = nn.Parameter(p0.clone())
    opt = GIAdam([p], lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    p.grad = grads[0].clone()
    opt.step()
    state = opt.state[p]
    # v₁ = β₂·g₀² + (1 − β₂)·g₀² = g₀²; m₁ = (1 − β₁)·g₀ as in Adam.
    torch.testing.assert_close(state["exp_avg_sq"], grads[0].square())
    torch.testing.assert_close(state["exp_avg"], 0.1 * grads[0])
    # The first update is ≈ lr·√(1 − β₂) per coordinate (Adam's would be ≈ lr).
    step1 = (p0 * (1 - 0.01 * 0.1) - p.detach()).abs()
    torch.testing.assert_close(step1, torch.full_like(step1, 0.01 * math.sqrt(0.05)))
    for g in grads[1:]:
        p.grad = g.clone()
        opt.step()
    ref_p, ref_m, ref_v = _gi_adam_reference(p0, grads, 0.01, (0.9, 0.95), 1e-8, 0.1)
    torch.testing.assert_close(p.detach(), ref_p)
    torch.testing.assert_close(opt.state[p]["exp_avg"], ref_m)
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_v)


def test_gi_adam_resumes_from_its_state_dict():
    model, twin = _gpt(), _gpt()
    cfg = OptimConfig(name="gi_adam", lr=1e-2)
    opt = build_optimizer(model, cfg)
    _lm_step(model, opt, 0)
    twin.load_state_dict(model.state_dict())
    twin_opt = build_optimizer(twin, cfg)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    _lm_step(model, opt, 1)
    _lm_step(twin, twin_opt, 1)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _debias(beta: float, t: int) -> float:
    # Wortsman et al.'s β̂_t = β·(1 − β^{t−1}) / (1 − β^t)
    return beta * (1 - beta ** (t - 1)) / (1 - beta**t)


@pytest.mark.parametrize("v_scale", [1e-6, 100.0])  # RMS ≫ 1 (clipped) and RMS < 1 (not)
def test_stable_adamw_scale_factor_matches_the_formula(v_scale):
    torch.manual_seed(1)
    lr, b1, b2, eps, wd = 0.05, 0.9, 0.95, 1e-8, 0.1
    p = nn.Parameter(torch.randn(5, 4))
    opt = build_optimizer(
        nn.ParameterDict({"w": p}),
        OptimConfig(name="stable_adamw", lr=lr, betas=[b1, b2], eps=eps, weight_decay=wd),
    )
    assert type(opt).__name__ == "StableAdamW"
    p.grad = torch.randn(5, 4)
    opt.step()  # step 1 creates the state; step 2 runs on hand-made m and v
    m_prev = torch.randn(5, 4) * 0.1
    v_prev = torch.rand(5, 4) * v_scale
    opt.state[p]["exp_avg"].copy_(m_prev)
    opt.state[p]["exp_avg_sq"].copy_(v_prev)
    theta = p.detach().clone()
    g = torch.randn(5, 4)
    p.grad = g.clone()
    opt.step()

    bh1, bh2 = _debias(b1, 2), _debias(b2, 2)
    v = bh2 * v_prev + (1 - bh2) * g * g
    m = bh1 * m_prev + (1 - bh1) * g
    rms = torch.sqrt(torch.mean(g * g / torch.clamp(v, min=eps**2)))
    eta = lr / max(1.0, float(rms))
    expected = theta - eta * wd * theta - eta * m / (v.sqrt() + eps)
    assert (float(rms) > 1.0) == (v_scale < 1.0)  # the two cases are the two regimes
    torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], v)


HIDDEN = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")


def test_muon_groups_cover_every_parameter_exactly_once():
    model = _gpt()
    opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-3))
    assert isinstance(opt, MuonWithAdamW)
    assert isinstance(opt.muon, torch.optim.Muon)
    assert isinstance(opt.adamw, torch.optim.AdamW)
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len(grouped) == len(set(grouped))
    muon_names = {n for g in opt.muon.param_groups for n in g["param_names"]}
    expected = {f"blocks.{i}.{h}" for i in range(2) for h in HIDDEN}
    assert muon_names == expected  # wte (= lm_head, tied), wpe, norms: AdamW
    assert all(p.ndim == 2 for g in opt.muon.param_groups for p in g["params"])
    assert {g["adjust_lr_fn"] for g in opt.muon.param_groups} == {"match_rms_adamw"}
    assert all(g["weight_decay"] == 0.1 for g in opt.muon.param_groups)


def test_muon_on_vit_leaves_patch_embed_and_head_to_adamw():
    pytest.importorskip("timm")
    from weyl.models.model_config import ViTModelConfig
    from weyl.models.vit import build_vit

    model = build_vit(
        ViTModelConfig(img_size=8, patch_size=4, num_classes=3, embed_dim=16, depth=1, num_heads=2)
    )
    opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-3))
    muon_names = {n for g in opt.muon.param_groups for n in g["param_names"]}
    assert muon_names == {
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.mlp.fc1.weight",
        "blocks.0.mlp.fc2.weight",
    }
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_muon_schedule_reaches_both_inner_optimizers():
    model = _gpt()
    opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-2))
    sched = LRSchedule(name="cosine", peak_lr=1e-2, min_lr=0.0, warmup_steps=4, total_steps=10)
    sched.apply(opt, 0)
    for inner in (opt.muon, opt.adamw):
        for g in inner.param_groups:
            assert g["initial_lr"] == 1e-2
            assert g["lr"] == pytest.approx(sched.lr(0))


def test_muon_resume_gives_the_identical_next_step():
    cfg = OptimConfig(name="muon", lr=1e-2)
    model = _gpt()
    opt = build_optimizer(model, cfg)
    sched = LRSchedule(name="cosine", peak_lr=1e-2, min_lr=0.0, warmup_steps=2, total_steps=10)
    for step in range(3):
        sched.apply(opt, step)
        _lm_step(model, opt, step)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    assert set(saved_opt) == {"muon", "adamw"}

    twin = _gpt(seed=123)
    twin.load_state_dict(saved_model)
    twin_opt = build_optimizer(twin, cfg)
    twin_opt.load_state_dict(saved_opt)
    for m, o in ((model, opt), (twin, twin_opt)):
        sched.apply(o, 3)
        _lm_step(m, o, 3)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # After the load the outer groups are the inner optimizers' (new) group dicts.
    assert twin_opt.param_groups[0] is twin_opt.muon.param_groups[0]
    assert twin_opt.param_groups[-1] is twin_opt.adamw.param_groups[-1]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"name": "lion"}, "optim.name"),
        ({"muon_momentum": 1.0}, "optim.muon_momentum"),
        ({"muon_adjust_lr": "spectral"}, "optim.muon_adjust_lr"),
    ],
)
def test_bad_stabilizer_keys_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        OptimConfig(**kwargs)
