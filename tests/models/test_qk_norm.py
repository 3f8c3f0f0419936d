"""model.qk_norm: LayerNorm over head_dim on each head's q and k, checked against an explicit
recomputation; the diagnostics still run and read the maps the layer really uses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from weyl.diagnostics import Diagnostics
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models.gpt import GPT
from weyl.models.model_config import (
    FlattenSwinModelConfig,
    GPTModelConfig,
    SwinModelConfig,
    ViTModelConfig,
)
from weyl.value_checks import ConfigError

D, H, T, V = 16, 2, 6, 13


def _gpt(qk_norm: bool = True, bias: bool = True) -> GPT:
    torch.manual_seed(0)
    model = GPT(
        GPTModelConfig(
            n_layer=2, n_head=H, n_embd=D, block_size=8, vocab_size=V, bias=bias, qk_norm=qk_norm
        )
    )
    with torch.no_grad():  # non-trivial affine parameters so the norm's γ, β are exercised
        for block in model.blocks:
            for norm in (block.attn.q_norm, block.attn.k_norm):
                norm.weight.uniform_(0.5, 2.0)
                norm.bias.uniform_(-0.5, 0.5)
    return model


def _explicit_attention(attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head LayerNorm of q and k written out (mean/var over head_dim), causal softmax."""
    _, t, c = x.shape
    dq = c // H
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.split(c, dim=-1)
    outs, maps = [], []
    for h in range(H):
        cols = slice(h * dq, (h + 1) * dq)

        def ln(z, norm):
            mu = z.mean(-1, keepdim=True)
            var = ((z - mu) ** 2).mean(-1, keepdim=True)
            return (z - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

        qh, kh = ln(q[..., cols], attn.q_norm), ln(k[..., cols], attn.k_norm)
        logits = qh @ kh.transpose(-2, -1) / math.sqrt(dq)
        logits = logits.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        a = logits.softmax(-1)
        maps.append(a)
        outs.append(a @ v[..., cols])
    y = torch.cat(outs, dim=-1) @ attn.proj.weight.T + attn.proj.bias
    return y, torch.stack(maps, dim=1)


@pytest.mark.parametrize("fused", [True, False])
def test_gpt_qk_norm_attention_equals_explicit_per_head_layernorm(fused):
    model = _gpt()
    attn = model.blocks[0].attn
    attn.fused_attn = fused
    x = torch.randn(3, T, D, generator=torch.Generator().manual_seed(1))
    expected, _ = _explicit_attention(attn, x)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)
    assert attn.q_norm.weight.shape == (D // H,)


def test_qk_norm_off_adds_no_parameters():
    on = sum(p.numel() for p in _gpt(qk_norm=True).parameters())
    off = GPT(GPTModelConfig(n_layer=2, n_head=H, n_embd=D, block_size=8, vocab_size=V, bias=True))
    n_off = sum(p.numel() for p in off.parameters())
    assert on - n_off == 2 * 2 * 2 * (D // H)  # layers × (q, k) × (γ, β) × head_dim
    assert "q_norm" not in dict(off.blocks[0].attn.named_parameters())


def test_diagnostics_run_with_qk_norm_and_report_the_true_maps_entropy():
    model = _gpt()
    probe = torch.randint(0, V, (2, 8), generator=torch.Generator().manual_seed(2))
    got = Diagnostics(model, DiagnosticsConfig(), probe).compute()
    x = model.drop(model.wte(probe) + model.wpe(torch.arange(8)))
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            _, maps = _explicit_attention(block.attn, block.ln_1(x))
            for h in range(H):
                a = maps[:, h].double()
                ent = -(a * torch.log(torch.where(a > 0, a, 1.0))).sum(-1).mean().item()
                assert got[f"attn/L{i:02d}/h{h:02d}/entropy"] == pytest.approx(ent, rel=1e-5)
            # σ₁(W_qᵀW_k) stays a statement about the projection weights
            w = block.attn.qkv.weight.double()
            dq = D // H
            sv = torch.linalg.svdvals(w[:dq].T @ w[D : D + dq])[0].item()
            assert got[f"attn/L{i:02d}/h00/qk_sigma1"] == pytest.approx(sv, rel=1e-4)
            x = block(x)
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in got.values())


def test_vit_qk_norm_is_timms():
    pytest.importorskip("timm")
    from weyl.models.vit import build_vit

    model = build_vit(
        ViTModelConfig(
            img_size=8,
            patch_size=4,
            num_classes=3,
            embed_dim=16,
            depth=1,
            num_heads=2,
            qk_norm=True,
        )
    )
    attn = model.blocks[0].attn
    assert isinstance(attn.q_norm, torch.nn.LayerNorm)
    assert attn.q_norm.normalized_shape == (8,)
    x = torch.randn(2, 5, 16)
    qkv = attn.qkv(x).reshape(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    q = F.layer_norm(qkv[0], (8,), attn.q_norm.weight, attn.q_norm.bias, attn.q_norm.eps)
    k = F.layer_norm(qkv[1], (8,), attn.k_norm.weight, attn.k_norm.bias, attn.k_norm.eps)
    a = (q @ k.transpose(-2, -1) / math.sqrt(8)).softmax(-1)
    y = attn.proj((a @ qkv[2]).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [SwinModelConfig, FlattenSwinModelConfig])
def test_swin_families_refuse_qk_norm_in_one_line(cls):
    with pytest.raises(ConfigError, match=r"^model\.qk_norm: .*no q/k norm") as err:
        cls(qk_norm=True)
    assert "\n" not in str(err.value)


def test_qk_norm_with_pure_sigma_reparam_is_refused():
    with pytest.raises(ConfigError, match=r"^model\.qk_norm: pure"):
        GPTModelConfig(qk_norm=True, sigma_reparam=True, sigma_reparam_pure=True)
