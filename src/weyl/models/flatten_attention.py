"""Focused Linear Attention (Han et al., ICCV 2023, "FLatten Transformer").

For one window of N tokens (our own implementation of the paper's Eq. and of the official
FLatten-Swin module's forward):

- q, k, v = split(x Wqkvᵀ + b); k ← k + P (a learned positional encoding, N × C);
- φ_p(x) = ‖x'‖ · (x'^p / ‖x'^p‖) with x' = (ReLU(x) + 1e-6) / softplus(s), p the focusing
  factor (3), s a learned per-channel scale, norms over all C channels (before the head split);
- per head h: O_h = A_h V_h with A_h = φ(Q_h) φ(K_h)ᵀ / (row sum + N·1e-6), computed in
  O(N) as φ(Q_h) (φ(K_h)ᵀ V_h / N) / (φ(Q_h)·mean(φ(K_h)) + 1e-6);
- rank restoration: O ← O + DWC(V), a depthwise k×k conv (k = 5) over the token grid, its
  head_dim filters shared by all heads;
- output projection.

``fused_attn`` follows timm's convention: True takes the O(N) path; False materialises the
implicit N×N map and passes it through ``attn_drop`` (where the attention view's capture
hooks in) before multiplying by V. Both paths compute the same function. The map that goes
through ``attn_drop`` (and is captured) is the exactly row-normalised
Â_h = φ(Q_h)φ(K_h)ᵀ / row sum, whose rows sum to 1; the forward then applies the per-row
factor row sum / (row sum + N·1e-6) that the paper's epsilon implies. The factor matters:
where φ(q_i) is all-epsilon (every channel of q_i negative) the row sum is ~1e-12 and the
layer's attention output for that token is ~0, while Â_h still shows where it points.
The explicit map costs O(N²) memory: 3 × 3136² fp32 per image at FLatten-Swin-S stage 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Keeps the kernel strictly positive and the normaliser away from 0 (values of the paper's code).
_KERNEL_EPS = 1e-6
_NORM_EPS = 1e-6


class FocusedLinearAttention(nn.Module):
    """Focused linear attention over windows of ``window_size`` tokens (``forward(x, mask)``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        focusing_factor: int = 3,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = tuple(window_size)
        self.focusing_factor = focusing_factor
        self.fused_attn = True
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        # Identity dropout: a tap for capturing the implicit map (the paper uses none here).
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(
            self.head_dim,
            self.head_dim,
            kernel_size,
            padding=kernel_size // 2,
            groups=self.head_dim,
        )
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        n = self.window_size[0] * self.window_size[1]
        self.positional_encoding = nn.Parameter(torch.zeros(1, n, dim))
        nn.init.trunc_normal_(self.qkv.weight, std=0.02)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        for linear in (self.qkv, self.proj):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def focused_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """φ(Q), φ(K), V split per head: each (B, H, N, head_dim)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, c).unbind(2)
        k = k + self.positional_encoding
        scale = F.softplus(self.scale)
        q = (F.relu(q) + _KERNEL_EPS) / scale
        k = (F.relu(k) + _KERNEL_EPS) / scale
        q = self._focus(q)
        k = self._focus(k)

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        return heads(q), heads(k), heads(v)

    def _focus(self, x: Tensor) -> Tensor:
        powered = x**self.focusing_factor
        return powered * (x.norm(dim=-1, keepdim=True) / powered.norm(dim=-1, keepdim=True))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B·windows, N, C) → same shape; ``mask`` is unused (no shifted windows)."""
        b, n, c = x.shape
        if n != self.positional_encoding.shape[1]:
            raise ValueError(
                f"FocusedLinearAttention built for {self.positional_encoding.shape[1]} tokens "
                f"per window, got {n}"
            )
        q, k, v = self.focused_qkv(x)
        if self.fused_attn:
            z = 1.0 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + _NORM_EPS)
            kv = (k.transpose(-2, -1) / n) @ v
            out = (q @ kv) * z
        else:
            scores = q @ k.transpose(-2, -1)
            row_sum = scores.sum(dim=-1, keepdim=True)
            # Tap the exactly row-normalised map; the eps of the O(N) path is a per-row factor.
            attn = self.attn_drop(scores / row_sum)
            out = (attn @ v) * (row_sum / (row_sum + n * _NORM_EPS))
        out = out.transpose(1, 2).reshape(b, n, c)
        h, w = self.window_size
        grid = v.reshape(b * self.num_heads, h, w, self.head_dim).permute(0, 3, 1, 2)
        out = out + self.dwc(grid).reshape(b, c, n).transpose(1, 2)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, "
            f"focusing_factor={self.focusing_factor}"
        )
