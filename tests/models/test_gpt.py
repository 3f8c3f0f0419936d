"""GPT: shapes, causality, backward, initialisations and config errors."""

from __future__ import annotations

import math

import pytest
import torch

from tests.models.twins import twin
from weyl.models import build_model
from weyl.models.model_config import GPTModelConfig


def _tiny(**overrides) -> GPTModelConfig:
    return twin("gpt_tiny", **overrides)


def test_forward_backward_shapes() -> None:
    model = build_model(_tiny(dropout=0.1, bias=True))
    idx = torch.randint(0, 64, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 64)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("fused", [True, False])
def test_future_tokens_do_not_change_past_logits(fused: bool) -> None:
    model = build_model(_tiny()).eval()
    for block in model.blocks:
        block.attn.fused_attn = fused
    idx = torch.randint(0, 64, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = torch.randint(0, 64, (2, 6))
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_weights_are_tied_and_bias_free() -> None:
    model = build_model(_tiny(bias=False))
    assert model.lm_head.weight is model.wte.weight
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.LayerNorm))


def test_fused_and_explicit_attention_agree() -> None:
    model = build_model(_tiny()).eval()
    idx = torch.randint(0, 64, (2, 16))
    fused = model(idx)
    for block in model.blocks:
        block.attn.fused_attn = False
    torch.testing.assert_close(model(idx), fused, atol=1e-5, rtol=1e-5)


def test_too_long_sequence_is_a_clear_error() -> None:
    model = build_model(_tiny())
    with pytest.raises(ValueError, match=r"model\.block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def _mid(init: str) -> GPTModelConfig:
    # Wide enough that sample std of one matrix is within ~1% of the true std.
    return GPTModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=8, vocab_size=64, init=init)


def test_nanogpt_init_scales_residual_projections() -> None:
    model = build_model(_mid("nanogpt"))
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert block.mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.03)
    scaled = 0.02 / math.sqrt(2 * 4)
    assert block.attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.03)
    assert block.mlp.fc2.weight.std().item() == pytest.approx(scaled, rel=0.03)


@pytest.mark.parametrize("init", ["xavier", "trunc_xavier"])
def test_xavier_inits(init: str) -> None:
    model = build_model(_mid(init))
    fc1 = model.blocks[0].mlp.fc1.weight  # (512, 128)
    glorot_std = math.sqrt(2.0 / (128 + 512))
    assert fc1.std().item() == pytest.approx(glorot_std, rel=0.03)
    if init == "xavier":
        assert fc1.abs().max().item() <= math.sqrt(6.0 / (128 + 512))
    else:
        assert fc1.abs().max().item() <= 2 * glorot_std / 0.87962566103423978 + 1e-7
    # q, k and v are initialised as three 128×128 matrices, not one 384×128.
    q = model.blocks[0].attn.qkv.weight[:128]
    assert q.std().item() == pytest.approx(math.sqrt(2.0 / 256), rel=0.05)
    # The tied embedding keeps N(0, 0.02).
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_unknown_init_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.init"):
        build_model(_tiny(init="kaiming"))
