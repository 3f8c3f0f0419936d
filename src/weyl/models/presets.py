"""Named model configs: the paper's architectures and tiny CPU twins of each family.

``named_config(name)`` returns a fresh schema dataclass (edit it freely);
``PRESET_NAMES`` lists the names. Paper-scale presets carry the Table 2 init and stochastic
depth (ViT "trunc_xavier", drop path 0.1 for B and 0.5 for L/g; GPT "xavier", dropout 0;
Swin-S/B and Flatten-Swin-S timm/official init with drop path 0.3/0.5/0.3).
"""

from __future__ import annotations

from collections.abc import Callable

from weyl.config.schema import (
    FlattenSwinModelConfig,
    GPTModelConfig,
    SwinModelConfig,
    ViTModelConfig,
)

ModelConfig = GPTModelConfig | ViTModelConfig | SwinModelConfig | FlattenSwinModelConfig


def gpt2_s() -> GPTModelConfig:
    """GPT-2 small: 12 × 768, 12 heads, context 1024, vocab 50304 (124M)."""
    return GPTModelConfig(n_layer=12, n_head=12, n_embd=768, init="xavier")


def gpt2_l() -> GPTModelConfig:
    """GPT-2 large ("nanoGPT-large" of Appendix K): 36 × 1280, 20 heads (774M)."""
    return GPTModelConfig(n_layer=36, n_head=20, n_embd=1280, init="xavier")


def gpt_tiny() -> GPTModelConfig:
    """CPU twin: 2 × 32, 4 heads, context 16, vocab 64."""
    return GPTModelConfig(
        n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=64, init="xavier"
    )


def vit_b16() -> ViTModelConfig:
    """ViT-B/16 at 224 px: 12 × 768, 12 heads, MLP 3072 (86.6M with 1000 classes)."""
    return ViTModelConfig(embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.1)


def vit_l16() -> ViTModelConfig:
    """ViT-L/16 at 224 px: 24 × 1024, 16 heads, MLP 4096 (304M)."""
    return ViTModelConfig(embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.5)


def vit_g14() -> ViTModelConfig:
    """ViT-g/14 of Appendix J: 40 × 1408, 16 heads, MLP 6144 (~1.01B)."""
    return ViTModelConfig(
        patch_size=14,
        embed_dim=1408,
        depth=40,
        num_heads=16,
        mlp_ratio=6144 / 1408,
        drop_path_rate=0.5,
    )


def vit_tiny() -> ViTModelConfig:
    """CPU twin: 32 px, patch 8 (16 tokens + cls), 2 × 64, 4 heads, 10 classes."""
    return ViTModelConfig(
        img_size=32,
        patch_size=8,
        num_classes=10,
        embed_dim=64,
        depth=2,
        num_heads=4,
        drop_path_rate=0.1,
    )


def swin_s() -> SwinModelConfig:
    """Swin-S at 224 px, window 7: embed 96, depths 2-2-18-2, heads 3-6-12-24 (49.6M)."""
    return SwinModelConfig(drop_path_rate=0.3)


def swin_b() -> SwinModelConfig:
    """Swin-B at 224 px, window 7: embed 128, depths 2-2-18-2, heads 4-8-16-32 (87.8M)."""
    return SwinModelConfig(embed_dim=128, num_heads=[4, 8, 16, 32], drop_path_rate=0.5)


def swin_tiny() -> SwinModelConfig:
    """CPU twin: 32 px, patch 2, 2 stages (16², 8²), window 4 with shifts, embed 16."""
    return SwinModelConfig(
        img_size=32,
        patch_size=2,
        num_classes=10,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        drop_path_rate=0.1,
    )


def flatten_swin_s() -> FlattenSwinModelConfig:
    """FLatten-Swin-S (official cfgs/flatten_swin_s.yaml): Swin-S with LLSS, window 56."""
    return FlattenSwinModelConfig(drop_path_rate=0.3)


def flatten_swin_tiny() -> FlattenSwinModelConfig:
    """CPU twin: 32 px, patch 2, stages 16², 8², 4², 2²; LLSS, global linear windows."""
    return FlattenSwinModelConfig(
        img_size=32,
        patch_size=2,
        num_classes=10,
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[2, 2, 4, 4],
        window_size=16,
        drop_path_rate=0.1,
    )


_PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "gpt2_s": gpt2_s,
    "gpt2_l": gpt2_l,
    "gpt_tiny": gpt_tiny,
    "vit_b16": vit_b16,
    "vit_l16": vit_l16,
    "vit_g14": vit_g14,
    "vit_tiny": vit_tiny,
    "swin_s": swin_s,
    "swin_b": swin_b,
    "swin_tiny": swin_tiny,
    "flatten_swin_s": flatten_swin_s,
    "flatten_swin_tiny": flatten_swin_tiny,
}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def named_config(name: str) -> ModelConfig:
    """A fresh config of the named preset (see ``PRESET_NAMES``)."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}: use one of {', '.join(PRESET_NAMES)}"
        ) from None
