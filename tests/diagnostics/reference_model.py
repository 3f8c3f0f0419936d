"""A minimal timm-style Transformer that implements ``attention_views()``, for diagnostics tests.

Attention follows timm's layout (fused ``qkv``: q rows, then k, then v; ``proj``;
``attn_drop`` on the softmax probabilities; a ``fused_attn`` switch) so the view captures
it with ``capture_via_attn_drop``. Token ids in, logits out; optional causal mask and
LayerNorm or RMSNorm (the latter has no β: the 13-term case of Fig. 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weyl.models.attention_view import (
    AttentionLayerView,
    capture_via_attn_drop,
    fused_qkv_views,
    split_cols_per_head,
)


class RefAttention(nn.Module):
    """timm-style multi-head self-attention."""

    def __init__(self, dim: int, num_heads: int, causal: bool, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.fused_attn = True

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if self.causal:
                future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
                att = att.masked_fill(future, float("-inf"))
            att = self.attn_drop(att.softmax(dim=-1))
            y = att @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, causal: bool, norm: str, qkv_bias: bool) -> None:
        super().__init__()
        make_norm = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}[norm]
        self.norm1 = make_norm(dim)
        self.attn = RefAttention(dim, num_heads, causal, qkv_bias)
        self.norm2 = make_norm(dim)
        self.mlp = RefMlp(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefTransformer(nn.Module):
    """Token embedding + learned positions, ``depth`` blocks, final norm, linear head."""

    def __init__(
        self,
        vocab_size: int = 32,
        dim: int = 32,
        depth: int = 2,
        num_heads: int = 4,
        seq_len: int = 16,
        causal: bool = True,
        norm: str = "layernorm",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(seq_len, dim) * 0.02)
        self.blocks = nn.ModuleList(
            RefBlock(dim, num_heads, causal, norm, qkv_bias) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def attention_views(self) -> list[AttentionLayerView]:
        views = []
        for i, block in enumerate(self.blocks):
            attn = block.attn
            h = attn.num_heads
            views.append(
                AttentionLayerView(
                    index=i,
                    path=f"blocks.{i}.attn",
                    num_heads=h,
                    head_dim=attn.head_dim,
                    dim=attn.qkv.in_features,
                    block=block,
                    attention=attn,
                    q_weight=lambda a=attn, h=h: fused_qkv_views(a.qkv.weight, h)[0],
                    k_weight=lambda a=attn, h=h: fused_qkv_views(a.qkv.weight, h)[1],
                    v_weight=lambda a=attn, h=h: fused_qkv_views(a.qkv.weight, h)[2],
                    o_weight=lambda a=attn, h=h: split_cols_per_head(a.proj.weight, h),
                    mlp_w1=lambda b=block: b.mlp.fc1.weight,
                    mlp_w2=lambda b=block: b.mlp.fc2.weight,
                    norm1=block.norm1,
                    norm2=block.norm2,
                    enable_capture=capture_via_attn_drop(attn),
                    causal=self.causal,
                )
            )
        return views


def lm_loss(model: nn.Module, idx: Tensor) -> Tensor:
    """Next-token cross-entropy of ``model`` on ``idx`` (B, T)."""
    logits = model(idx[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))
