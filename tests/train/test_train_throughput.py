"""MFU's FLOP count against the closed-form transformer FLOPs (PaLM App. B) of the same models."""

import pytest
import torch

from weyl.models import build_model
from weyl.models.model_config import GPTModelConfig, ViTModelConfig
from weyl.train.throughput import training_flops_per_sample


def _explicit_attention(model: torch.nn.Module) -> None:
    # FlopCounterMode counts SDPA only for its CUDA kernels; the explicit path is matmuls.
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False


def test_gpt_flops_equal_6n_plus_attention_per_token():
    L, d, T, V = 2, 32, 24, 64
    model = build_model(
        GPTModelConfig(n_layer=L, n_head=4, n_embd=d, block_size=T, vocab_size=V, bias=False)
    )
    _explicit_attention(model)
    x = torch.randint(0, V, (1, T))
    # matmul weights: qkv 3d², proj d², mlp 8d² per layer, and the (tied) V×d head
    n_matmul = L * 12 * d * d + V * d
    expected_per_token = 6 * n_matmul + 12 * L * d * T
    assert training_flops_per_sample(model, x) / T == expected_per_token


def test_vit_flops_per_image_and_no_side_effects():
    img, p, d, L, classes = 32, 8, 48, 2, 10
    model = build_model(
        ViTModelConfig(
            img_size=img, patch_size=p, embed_dim=d, depth=L, num_heads=4, num_classes=classes
        )
    )
    _explicit_attention(model)
    patches = (img // p) ** 2
    n = patches + 1  # + the class token
    forward = (
        2 * patches * (3 * p * p) * d  # patch embedding (a stride-p conv)
        + 2 * n * L * 12 * d * d  # qkv, proj, mlp
        + 2 * 2 * L * n * n * d  # q·kᵀ and attn·v
        + 2 * d * classes  # head on the pooled token
    )
    model.train()
    x = torch.randn(2, 3, img, img)
    rng = torch.get_rng_state()
    assert training_flops_per_sample(model, x) == pytest.approx(3 * forward, rel=0, abs=0.5)
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(q.grad is None for q in model.parameters())
