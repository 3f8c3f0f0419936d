"""ViT-B/16, ViT-L/16, ViT-g/14 (and tiny twins) as timm ``VisionTransformer``s.

Built from explicit dimensions with ``pretrained=False`` semantics (the constructor never
touches the network). timm's defaults are kept (class token, learned positions, qkv bias,
pre-LN, GELU MLP); ``drop_path_rate`` is the stochastic depth of Table 2. ``init``: "timm"
keeps timm's own init (trunc-normal 0.02), "xavier" / "trunc_xavier" re-initialise every
Linear weight after construction (Table 2: ViT uses "Truncated Xavier"). ``qk_norm`` is
timm's own (a LayerNorm over head_dim on q and k); the view captures the maps after it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

from weyl.models.attention_view import AttentionLayerView, register_view
from weyl.models.model_config import ViTModelConfig
from weyl.models.timm_views import timm_block_view
from weyl.models.transformer_blocks import register_blocks
from weyl.models.weight_init import XAVIER_INITS, reinit_linears


def build_vit(cfg: ViTModelConfig) -> VisionTransformer:
    """A timm VisionTransformer with the dimensions of ``cfg`` (checked by the config)."""
    # lazily: timm takes seconds to import
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        drop_path_rate=cfg.drop_path_rate,
        qk_norm=cfg.qk_norm,
    )
    if cfg.init in XAVIER_INITS:
        reinit_linears(model, cfg.init)
    return model


def vit_attention_views(model: nn.Module) -> list[AttentionLayerView]:
    """One view per ViT block, in depth order."""
    return [
        timm_block_view(i, f"blocks.{i}.attn", block, kind="softmax")
        for i, block in enumerate(model.blocks)
    ]


def _is_timm_visiontransformer(m: nn.Module) -> bool:
    # timm is imported by the builder, not here (it costs seconds at start-up): a model can
    # only be a timm VisionTransformer once timm's module is loaded.
    module = sys.modules.get("timm.models.vision_transformer")
    return module is not None and isinstance(m, module.VisionTransformer)


register_view(_is_timm_visiontransformer, vit_attention_views)
register_blocks(_is_timm_visiontransformer, lambda model: list(model.blocks))
