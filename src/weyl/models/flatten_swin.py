"""Flatten-Swin: a timm Swin whose "L" stages use Focused Linear Attention (Han et al. 2023).

Structure of the official FLatten-Swin (LeapLabTHU/FLatten-Transformer, ``flatten_swin.py``
with ``cfgs/flatten_swin_s.yaml``: embed 96, depths 2-2-18-2, heads 3-6-12-24,
``WINDOW_SIZE: 56``, ``ATTN_TYPE: LLSS``, drop path 0.3):

- "L" stages use ``window_size`` (56); a window at least as large as the feature map is
  clipped to it and never shifted, so at 224 px stages 1–2 (56², 28² tokens) attend globally;
- "S" stages keep Swin's softmax window attention with window 7 (12 when window_size > 56),
  shifted in every other block, with relative-position bias;
- "L" blocks have no relative-position bias; each holds a positional encoding of
  window-area × C, a shared depthwise conv and a per-channel scale instead.

Published size of FLatten-Swin-S: 51M parameters (Han et al. 2023, Table 1); this build has
50,510,288 for 1000 classes (the official code's count by construction: Swin-S 49,606,258,
minus the relative-position tables of the four L blocks, plus their positional encodings,
depthwise convs and scales), 0.96% under the rounded figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from timm.models.swin_transformer import SwinTransformer

from weyl.models.flatten_attention import FocusedLinearAttention
from weyl.models.model_config import FlattenSwinModelConfig
from weyl.models.swin import swin_kwargs
from weyl.models.weight_init import XAVIER_INITS, reinit_linears


def softmax_window_size(linear_window: int) -> int:
    """Window of the softmax ("S") stages, as the official code derives it."""
    return 7 if linear_window <= 56 else 12


def build_flatten_swin(cfg: FlattenSwinModelConfig) -> SwinTransformer:
    """A timm SwinTransformer with Focused Linear Attention in the "L" stages of ``cfg``."""
    pattern = cfg.attention_pattern
    windows = [
        cfg.window_size if kind == "L" else softmax_window_size(cfg.window_size) for kind in pattern
    ]
    # lazily: timm takes seconds to import
    from timm.models.swin_transformer import SwinTransformer

    model = SwinTransformer(window_size=tuple((w, w) for w in windows), **swin_kwargs(cfg))
    for stage, kind in zip(model.layers, pattern):
        if kind != "L":
            continue
        for block in stage.blocks:
            if any(block.shift_size):
                # Linear attention has no shift mask: windows here must cover the feature map.
                raise ValueError(
                    f"model.window_size={cfg.window_size} is smaller than a linear-attention "
                    f"stage's feature map {tuple(block.input_resolution)}; the official "
                    "Flatten-Swin uses global windows there (window_size >= feature map)"
                )
            old = block.attn
            block.attn = FocusedLinearAttention(
                dim=old.qkv.in_features,
                num_heads=old.num_heads,
                window_size=tuple(block.window_size),
                qkv_bias=old.qkv.bias is not None,
                proj_drop=old.proj_drop.p,
                focusing_factor=cfg.focusing_factor,
                kernel_size=cfg.kernel_size,
            ).to(old.qkv.weight.device)
    if cfg.init in XAVIER_INITS:
        reinit_linears(model, cfg.init)
    return model
