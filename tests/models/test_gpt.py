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


def _nanogpt_rule(name: str, n_layer: int) -> tuple[str, float]:
    """nanoGPT's model.py init, restated per parameter name: ``_init_weights`` gives every Linear
    and Embedding weight N(0, 0.02) and zero biases, then every ``c_proj.weight`` (attention and
    MLP output, here ``attn.proj`` / ``mlp.fc2``) is redrawn from N(0, 0.02/√(2·n_layer));
    LayerNorm weights are 1 and biases 0; lm_head is wte."""
    if "ln_" in name:
        return ("ones", 0.0) if name.endswith("weight") else ("zeros", 0.0)
    if name.endswith("bias"):
        return ("zeros", 0.0)
    if name.endswith(("attn.proj.weight", "mlp.fc2.weight")):
        return ("normal", 0.02 / math.sqrt(2 * n_layer))
    return ("normal", 0.02)


def test_nanogpt_init_is_nanogpts_rule_for_every_parameter() -> None:
    torch.manual_seed(0)
    n_layer = 6
    cfg = GPTModelConfig(
        n_layer=n_layer, n_head=4, n_embd=192, block_size=256, vocab_size=512, bias=True,
        init="nanogpt",
    )  # fmt: skip
    model = build_model(cfg)
    assert model.lm_head.weight is model.wte.weight  # tied, counted once below
    names = [name for name, _ in model.named_parameters()]
    assert "wpe.weight" in names and "wte.weight" in names
    for name, p in model.named_parameters():
        kind, std = _nanogpt_rule(name, n_layer)
        if kind == "ones":
            assert torch.equal(p, torch.ones_like(p)), name
        elif kind == "zeros":
            assert torch.equal(p, torch.zeros_like(p)), name
        else:
            x = p.detach().double().flatten()
            # ≥ 36,864 draws: the sample std is within ~0.4% (1σ) of the true one
            assert x.std().item() == pytest.approx(std, rel=0.03), name
            assert abs(x.mean().item()) < 4 * std / math.sqrt(x.numel()), name
            # a normal, not a uniform of the same std (kurtosis 3 vs 1.8) nor a truncation
            kurtosis = (((x - x.mean()) / x.std()) ** 4).mean().item()
            assert kurtosis == pytest.approx(3.0, abs=0.15), name
            assert x.abs().max().item() > 3.5 * std, name


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
