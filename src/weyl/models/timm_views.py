"""Attention views of timm-layout blocks (timm ViT/Swin blocks and Flatten-Swin's).

A timm block holds ``norm1``, ``attn`` (fused ``qkv`` Linear: q rows, then k, then v;
``proj`` Linear; ``attn_drop``; ``fused_attn``), ``norm2`` and ``mlp`` (``fc1``, ``fc2``).
timm 1.0.31's ``Attention`` and ``WindowAttention`` compute ``softmax`` explicitly when
``fused_attn`` is false and pass the probabilities through ``attn_drop``; in
``WindowAttention`` the relative-position bias and the shifted-window mask are added
*before* the softmax, so the captured maps are the probabilities the layer really uses
(the shift mask is −100, so masked entries are ~e⁻¹⁰⁰, not exact zeros).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from weyl.models.attention_view import (
    AttentionLayerView,
    CaptureFn,
    capture_via_attn_drop,
    fused_qkv_views,
    split_cols_per_head,
)
from weyl.models.sigma_reparam import effective_weight


def timm_block_view(
    index: int,
    path: str,
    block: nn.Module,
    kind: str,
    enable_capture: CaptureFn | None = None,
    extra: dict[str, object] | None = None,
) -> AttentionLayerView:
    """View of one timm-layout block; weights are read (σReparam-aware) at call time."""
    attn = block.attn
    heads = int(attn.num_heads)
    qkv_out, dim = attn.qkv.weight.shape
    head_dim = qkv_out // 3 // heads

    def qkv(i: int) -> Callable[[], Tensor]:
        return lambda: fused_qkv_views(effective_weight(attn.qkv), heads)[i]

    def optional_mlp(name: str) -> Callable[[], Tensor | None]:
        def weight() -> Tensor | None:
            mlp = getattr(block, "mlp", None)
            layer = getattr(mlp, name, None)
            return None if layer is None else effective_weight(layer)

        return weight

    mlp = getattr(block, "mlp", None)
    refs: dict[str, object] = {"qkv": attn.qkv, "proj": attn.proj}
    if mlp is not None:
        refs.update(fc1=getattr(mlp, "fc1", None), fc2=getattr(mlp, "fc2", None))
    refs.update(extra or {})
    return AttentionLayerView(
        index=index,
        path=path,
        num_heads=heads,
        head_dim=head_dim,
        dim=dim,
        block=block,
        attention=attn,
        q_weight=qkv(0),
        k_weight=qkv(1),
        v_weight=qkv(2),
        o_weight=lambda: split_cols_per_head(effective_weight(attn.proj), heads),
        mlp_w1=optional_mlp("fc1"),
        mlp_w2=optional_mlp("fc2"),
        norm1=getattr(block, "norm1", None),
        norm2=getattr(block, "norm2", None),
        enable_capture=enable_capture or capture_via_attn_drop(attn),
        causal=False,
        kind=kind,
        extra=refs,
    )
