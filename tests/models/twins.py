"""The CPU twins the model tests measure, as the tests' own explicit configs.

Paper-scale models come from the catalogue (``weyl.config.model_config``, i.e.
``configs/model/*.yaml``); these twins fix the sizes the assertions count on (4 heads of dim 8,
context 16, two Swin blocks per stage for the shifted window, ...), so a change to the
catalogue's ``*_tiny`` entries, which recipes use, cannot silently change what a test checks.
"""

from __future__ import annotations

import dataclasses

from weyl.models.model_config import (
    FlattenSwinModelConfig,
    GPTModelConfig,
    ModelConfig,
    SwinModelConfig,
    ViTModelConfig,
)

_TWINS: dict[str, ModelConfig] = {
    # 2 × 32, 4 heads, context 16, vocab 64
    "gpt_tiny": GPTModelConfig(
        n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=64, init="xavier"
    ),
    # 32 px, patch 8 (16 tokens + cls), 2 × 64, 4 heads, 10 classes
    "vit_tiny": ViTModelConfig(
        img_size=32,
        patch_size=8,
        num_classes=10,
        embed_dim=64,
        depth=2,
        num_heads=4,
        drop_path_rate=0.1,
    ),
    # 32 px, patch 2, 2 stages (16², 8²), window 4 with shifts, embed 16
    "swin_tiny": SwinModelConfig(
        img_size=32,
        patch_size=2,
        num_classes=10,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        drop_path_rate=0.1,
    ),
    # 32 px, patch 2, stages 16², 8², 4², 2²; LLSS, global linear windows
    "flatten_swin_tiny": FlattenSwinModelConfig(
        img_size=32,
        patch_size=2,
        num_classes=10,
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[2, 2, 4, 4],
        window_size=16,
        drop_path_rate=0.1,
    ),
}


def twin(name: str, **changes: object) -> ModelConfig:
    """A fresh copy of twin ``name`` with ``changes`` (checked like any config)."""
    return dataclasses.replace(_TWINS[name], **changes)
