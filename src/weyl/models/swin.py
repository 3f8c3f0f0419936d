"""Swin-S / Swin-B (and tiny twins) as timm ``SwinTransformer``s, plus their attention view.

timm's Swin matches the original (Liu et al. 2021) parameter for parameter (Swin-S:
49,606,258 for 1000 classes). ``init``: "timm" keeps timm's init; "xavier" /
"trunc_xavier" re-initialise every Linear weight. The view also covers Flatten-Swin, which
is a timm Swin whose linear-attention stages hold :class:`FocusedLinearAttention`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from timm.models.swin_transformer import SwinTransformer

from weyl.models.attention_view import AttentionLayerView, register_view
from weyl.models.flatten_attention import FocusedLinearAttention
from weyl.models.model_config import SwinModelConfig
from weyl.models.timm_views import timm_block_view
from weyl.models.transformer_blocks import register_blocks
from weyl.models.weight_init import XAVIER_INITS, reinit_linears


def swin_kwargs(cfg: SwinModelConfig) -> dict[str, object]:
    """Constructor arguments of timm's SwinTransformer shared by Swin and Flatten-Swin."""
    return {
        "img_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "in_chans": cfg.in_chans,
        "num_classes": cfg.num_classes,
        "embed_dim": cfg.embed_dim,
        "depths": tuple(cfg.depths),
        "num_heads": tuple(cfg.num_heads),
        "mlp_ratio": cfg.mlp_ratio,
        "drop_path_rate": cfg.drop_path_rate,
    }


def build_swin(cfg: SwinModelConfig) -> SwinTransformer:
    """A timm SwinTransformer with the dimensions of ``cfg`` (checked by the config)."""
    # lazily: timm takes seconds to import
    from timm.models.swin_transformer import SwinTransformer

    model = SwinTransformer(window_size=cfg.window_size, **swin_kwargs(cfg))
    if cfg.init in XAVIER_INITS:
        reinit_linears(model, cfg.init)
    return model


def swin_attention_views(model: nn.Module) -> list[AttentionLayerView]:
    """One view per Swin block across all stages, in depth order.

    Softmax window attention has ``kind="window_softmax"`` and captures
    ``(B·windows, H, N_win, N_win)``; Flatten's focused linear attention has ``kind="linear"``
    and captures its implicit normalised map (see :class:`FocusedLinearAttention`).
    """
    views = []
    for s, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            linear = isinstance(block.attn, FocusedLinearAttention)
            views.append(
                timm_block_view(
                    len(views),
                    f"layers.{s}.blocks.{j}.attn",
                    block,
                    kind="linear" if linear else "window_softmax",
                    extra={
                        "stage": s,
                        "window_size": tuple(block.window_size),
                        "shift_size": tuple(block.shift_size),
                    },
                )
            )
    return views


def _is_timm_swintransformer(m: nn.Module) -> bool:
    # timm is imported by the builder, not here (it costs seconds at start-up): a model can
    # only be a timm SwinTransformer once timm's module is loaded.
    module = sys.modules.get("timm.models.swin_transformer")
    return module is not None and isinstance(m, module.SwinTransformer)


register_view(_is_timm_swintransformer, swin_attention_views)
register_blocks(
    _is_timm_swintransformer,
    lambda model: [block for stage in model.layers for block in stage.blocks],
)
