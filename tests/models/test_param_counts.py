"""Parameter counts of the paper-scale models of the catalogue (configs/model/), built on the meta device (no memory)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from weyl.config import model_config
from weyl.models import GPT, build_model


def _count(name: str) -> int:
    with torch.device("meta"):
        model = build_model(model_config(name))
    assert all(p.is_meta for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("vit_b16", 86_567_656), ("swin_s", 49_606_258)],
)
def test_exact_counts_of_timm_references(name: str, expected: int) -> None:
    # Published counts of timm's vit_base_patch16_224 / swin_small_patch4_window7_224.
    assert _count(name) == expected


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("vit_l16", 304e6, 307e6),
        ("vit_g14", 1.00e9, 1.02e9),  # Appendix J: "1011M, around one billion"
        ("gpt2_s", 123.5e6, 124.5e6),
        ("gpt2_l", 773e6, 775e6),
        ("swin_b", 87.5e6, 88.5e6),
    ],
)
def test_counts_in_published_ranges(name: str, low: float, high: float) -> None:
    assert low <= _count(name) <= high


def test_vit_g_dimensions() -> None:
    with torch.device("meta"):
        model = build_model(model_config("vit_g14"))
    assert len(model.blocks) == 40
    assert model.blocks[0].attn.num_heads == 16
    assert model.blocks[0].mlp.fc1.weight.shape == (6144, 1408)


def test_flatten_swin_s_count() -> None:
    n = _count("flatten_swin_s")
    # Hand count from Swin-S: the four linear-attention blocks (stages 1-2) drop their 13×13
    # relative-position tables and gain a (window area × C) positional encoding, a shared
    # depthwise 5×5 conv over head_dim=32 channels (+ bias) and a per-channel scale.
    swin_s = 49_606_258
    rel_tables = 2 * (13 * 13 * 3) + 2 * (13 * 13 * 6)
    stage1 = 56 * 56 * 96 + (32 * 25 + 32) + 96
    stage2 = 28 * 28 * 192 + (32 * 25 + 32) + 192
    assert n == swin_s - rel_tables + 2 * stage1 + 2 * stage2
    # Han et al. (2023), Table 1: FLatten-Swin-S has 51M parameters.
    assert abs(n - 51e6) / 51e6 < 0.01


def test_gpt_num_params_excludes_positions() -> None:
    with torch.device("meta"):
        model = build_model(model_config("gpt2_s"))
    assert isinstance(model, GPT)
    total = model.num_params(non_embedding=False)
    # Tied embeddings are counted once: 12 blocks of 12·768² weights + LNs + tables.
    d, layers, vocab, ctx = 768, 12, 50304, 1024
    by_hand = layers * (12 * d * d + 2 * d) + d + vocab * d + ctx * d
    assert total == by_hand
    assert model.num_params(non_embedding=True) == total - ctx * d


def _vit_by_hand(dim: int, mlp: int, depth: int, patch: int, head: bool) -> int:
    """A 224-px timm ViT counted from its layers: patch embedding, cls + positions, blocks."""
    tokens = (224 // patch) ** 2 + 1
    block = 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + 2 * dim
    block += (dim * mlp + mlp) + (mlp * dim + dim)
    total = 3 * patch * patch * dim + dim + dim + tokens * dim + depth * block + 2 * dim
    return total + (dim * 1000 + 1000 if head else 0)


def _without_head(name: str) -> int:
    with torch.device("meta"):
        model = build_model(model_config(name))
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))


def test_paper_counts_vs_ours_as_the_readme_states() -> None:
    # ViT-L: timm's model has 304.3M; the paper's 307M is the original ViT paper's figure.
    assert _count("vit_l16") == _vit_by_hand(1024, 4096, 24, 16, head=True) == 304_326_632
    assert round(_count("vit_l16") / 1e6) != 307
    # ViT-g: Appendix J's 1011M is the model without its 1000-class head.
    assert _without_head("vit_g14") == _vit_by_hand(1408, 6144, 40, 14, head=False)
    assert round(_without_head("vit_g14") / 1e6) == 1011
    assert round(_count("vit_g14") / 1e6) == 1013


@pytest.mark.parametrize(
    ("name", "published"),
    # GPT-2 small / large with their own 50257-token vocabulary and biases (Hugging Face's
    # published counts of gpt2 and gpt2-large); the paper's 125M / 774M.
    [("gpt2_s", 124_439_808), ("gpt2_l", 774_030_080)],
)
def test_gpt2_with_its_own_vocabulary_and_biases(name: str, published: int) -> None:
    cfg = dataclasses.replace(model_config(name), vocab_size=50257, bias=True)
    with torch.device("meta"):
        model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == published
