"""σReparam: Ŵ = γ/σ(W)·W with a power-iterated σ, checked against torch.linalg."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from tests.models.twins import twin
from weyl.config import model_config
from weyl.models import (
    SigmaReparamConv2d,
    SigmaReparamLinear,
    apply_sigma_reparam,
    build_model,
    effective_weight,
)


def test_identity_at_init_and_svd_initialised_state() -> None:
    model = build_model(twin("vit_tiny")).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    reference = copy.deepcopy(model)
    apply_sigma_reparam(model)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    qkv, raw = model.blocks[0].attn.qkv, reference.blocks[0].attn.qkv.weight
    assert isinstance(qkv, SigmaReparamLinear)
    assert isinstance(model.patch_embed.proj, SigmaReparamConv2d)
    assert isinstance(model.head, SigmaReparamLinear)
    s = torch.linalg.svdvals(raw)[0]
    assert qkv.gamma.item() == pytest.approx(s.item(), rel=1e-5)
    # u, v are the leading singular pair: W v = σ u.
    torch.testing.assert_close(raw @ qkv.sigma_v, s * qkv.sigma_u, atol=1e-5, rtol=1e-4)
    # The original Parameters are reused, so state-dict keys keep their names.
    assert set(reference.state_dict()) <= set(model.state_dict())


def test_spectral_norm_of_effective_weight_converges_to_gamma() -> None:
    layer = SigmaReparamLinear.from_linear(nn.Linear(48, 32))
    with torch.no_grad():
        # Make the SVD-initialised u, v stale and γ arbitrary; power iteration must recover.
        layer.weight.add_(torch.randn_like(layer.weight))
        layer.gamma.fill_(2.5)
    stale = torch.linalg.matrix_norm(effective_weight(layer).detach(), ord=2).item()
    assert abs(stale - 2.5) > 1e-3
    layer.train()
    x = torch.randn(4, 48)
    for _ in range(60):
        layer(x)
    w_hat = effective_weight(layer).detach()
    assert torch.linalg.matrix_norm(w_hat, ord=2).item() == pytest.approx(2.5, abs=1e-3)
    # The forward uses exactly that weight.
    torch.testing.assert_close(layer(x), x @ w_hat.T + layer.bias, atol=1e-5, rtol=1e-5)


def test_conv_sigma_is_of_the_flattened_kernel() -> None:
    conv = SigmaReparamConv2d.from_conv(nn.Conv2d(3, 8, 4, stride=4))
    s = torch.linalg.svdvals(conv.weight.detach().reshape(8, -1))[0]
    assert conv.sigma().item() == pytest.approx(s.item(), rel=1e-5)


def test_eval_mode_does_not_touch_buffers_and_train_mode_does() -> None:
    model = apply_sigma_reparam(build_model(twin("gpt_tiny")))
    layer = model.blocks[0].attn.qkv
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))  # u, v no longer a fixed point
    u, v = layer.sigma_u.clone(), layer.sigma_v.clone()
    idx = torch.randint(0, 64, (2, 8))
    model.eval()
    model(idx)
    assert torch.equal(layer.sigma_u, u) and torch.equal(layer.sigma_v, v)
    model.train()
    model(idx)
    assert not torch.equal(layer.sigma_u, u)


def test_gradients_reach_gamma_and_weight() -> None:
    model = apply_sigma_reparam(build_model(twin("gpt_tiny")))
    idx = torch.randint(0, 64, (2, 8))
    model(idx).square().mean().backward()
    layer = model.blocks[1].mlp.fc2
    assert layer.gamma.grad is not None and layer.gamma.grad.abs() > 0
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_tied_lm_head_stays_a_plain_linear() -> None:
    model = apply_sigma_reparam(build_model(twin("gpt_tiny")))
    assert type(model.lm_head) is nn.Linear
    assert model.lm_head.weight is model.wte.weight


def test_state_dict_round_trip() -> None:
    cfg = twin("swin_tiny", sigma_reparam=True)
    model = build_model(cfg)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    model(x)  # one power-iteration step so buffers differ from a fresh build
    torch.manual_seed(123)
    other = build_model(cfg)
    other.load_state_dict(model.state_dict())
    model.eval()
    other.eval()
    torch.testing.assert_close(other(x), model(x))
    for (name, a), b in zip(model.named_buffers(), other.buffers()):
        if "sigma_" in name:
            assert torch.equal(a, b)


def test_sigma_is_fp32_under_autocast() -> None:
    layer = SigmaReparamLinear.from_linear(nn.Linear(16, 16))
    layer.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 16))
        s = layer.sigma()
    assert y.dtype == torch.bfloat16
    assert s.dtype == torch.float32
    assert layer.sigma_u.dtype == torch.float32


@pytest.mark.parametrize("name", ["vit_tiny", "swin_tiny", "flatten_swin_tiny", "gpt_tiny"])
def test_pure_variant_removes_layernorms_and_still_trains(name: str) -> None:
    cfg = twin(name, sigma_reparam=True, sigma_reparam_pure=True)
    model = build_model(cfg)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    batch = torch.randint(0, 64, (2, 8)) if name.startswith("gpt") else torch.randn(2, 3, 32, 32)
    out = model(batch)
    out.float().square().mean().backward()
    assert torch.isfinite(out).all()
    if "flatten" in name:
        # Flatten's depthwise rank-restoration conv is a per-channel filter, left as is.
        dwc = model.layers[0].blocks[0].attn.dwc
        assert type(dwc) is nn.Conv2d


def test_pure_without_sigma_reparam_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"model\.sigma_reparam"):
        build_model(twin("vit_tiny", sigma_reparam_pure=True))


def test_meta_device_build() -> None:
    cfg = dataclasses.replace(model_config("vit_b16"), sigma_reparam=True)
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.blocks[0].attn.qkv.sigma_u.is_meta


def test_keep_init_keeps_every_weight_bitwise() -> None:
    torch.manual_seed(0)
    model = build_model(twin("vit_tiny"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_sigma_reparam(model, init="keep")
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def _official_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (SigmaReparamLinear, SigmaReparamConv2d))]


def test_official_init_redraws_as_convert_to_sn() -> None:
    # The definition (ml-sigma-reparam's SNLinear/SNConv2d): weight ~ trunc_normal_(std=0.02)
    # with torch's default bounds ±2.0, bias ~ U(±1/sqrt(fan_in)) of a fresh nn.Linear over
    # the flattened kernel, γ = σ₁ of that new weight.
    torch.manual_seed(0)
    model = build_model(twin("vit_tiny", sigma_reparam=True, sigma_reparam_init="official"))
    layers = _official_layers(model)
    assert isinstance(model.patch_embed.proj, SigmaReparamConv2d) and len(layers) > 5
    weights = torch.cat([m.weight.detach().flatten() for m in layers])
    n = weights.numel()
    # mean 0 and std 0.02 within 4 standard errors of their sampling distributions
    assert abs(weights.mean().item()) < 4 * 0.02 / n**0.5
    assert weights.std().item() == pytest.approx(0.02, abs=4 * 0.02 / (2 * n) ** 0.5)
    # the ±2 bounds are 100 std away: in effect a plain normal, so ≈4.55% fall beyond 2 std
    beyond = (weights.abs() > 0.04).float().mean().item()
    p = 0.0455
    assert beyond == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5)
    assert weights.abs().max().item() < 2.0
    for m in layers:
        fan_in = m.weight[0].numel()
        bound = 1.0 / fan_in**0.5
        b = m.bias.detach()
        assert b.abs().max().item() <= bound
        # uniform on [-bound, bound]: the spread reaches well past half the bound (not zeros)
        assert b.abs().max().item() > 0.5 * bound
        s = torch.linalg.svdvals(m.weight.detach().reshape(m.weight.shape[0], -1))[0]
        assert m.gamma.item() == pytest.approx(s.item(), rel=1e-5)


def test_official_init_bias_is_uniform_in_distribution() -> None:
    torch.manual_seed(0)
    fan_in = 64
    layer = SigmaReparamLinear.from_linear(nn.Linear(fan_in, 4096), init="official")
    bias = layer.bias.detach() * fan_in**0.5  # U(-1, 1)
    # Uniform(-1, 1): mean 0, variance 1/3; deciles evenly spaced
    assert abs(bias.mean().item()) < 4 * (1 / 3 / 4096) ** 0.5
    assert bias.var().item() == pytest.approx(1 / 3, abs=0.03)
    q = torch.quantile(bias, torch.tensor([0.1, 0.5, 0.9]))
    torch.testing.assert_close(q, torch.tensor([-0.8, 0.0, 0.8]), atol=0.06, rtol=0)


def test_official_init_keeps_parameter_identity_and_tied_head() -> None:
    model = build_model(twin("gpt_tiny"))
    qkv = model.blocks[0].attn.qkv.weight
    emb = model.wte.weight.detach().clone()
    apply_sigma_reparam(model, init="official")
    assert model.blocks[0].attn.qkv.weight is qkv  # same Parameter, new values
    assert torch.equal(model.wte.weight, emb)  # the tied lm_head/embedding is not redrawn
    assert type(model.lm_head) is nn.Linear


def test_bad_init_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.sigma_reparam_init"):
        apply_sigma_reparam(nn.Linear(4, 4), init="xavier")
    with pytest.raises(ValueError, match=r"model\.sigma_reparam_init"):
        twin("vit_tiny", sigma_reparam=True, sigma_reparam_init="xavier")
    with pytest.raises(ValueError, match=r"model\.sigma_reparam_init.*sigma_reparam=true"):
        twin("vit_tiny", sigma_reparam_init="official")
