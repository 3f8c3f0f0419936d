"""A GPT-2 decoder in one file, faithful to nanoGPT (Karpathy, 2022).

Pre-LN blocks, learned absolute positions, GELU MLP (4×), weight tying between the token
embedding and the output head, optional biases (``bias=False`` gives bias-free Linear and
LayerNorm as in nanoGPT's default), dropout on embeddings / attention / residuals.

GPT-2 small: 12 layers × 768, 12 heads, 124M parameters (vocab 50304, tied embeddings);
GPT-2 large: 36 layers × 1280, 20 heads, 774M.

The attention module follows timm's layout so the attention view can split and capture it:
a fused ``qkv`` Linear (rows: q, then k, then v), ``proj`` Linear, ``attn_drop`` applied to
the softmax probabilities and a ``fused_attn`` switch (True: SDPA with ``is_causal``; False:
explicit masked softmax → ``attn_drop`` → ``@ v``).

``qk_norm`` (Wortsman et al. 2023; Dehghani et al. 2023): a LayerNorm over ``head_dim`` on each
head's q and k before the dot product, as timm's ``Attention(qk_norm=True)``; one norm shared
by the heads (weights of shape ``head_dim``). With it on, the attention logits are
``LN(q)·LN(k)ᵀ/√d_q`` rather than ``x W_qᵀ W_k xᵀ/√d_q``: the attention view still reports
σ₁(W_qᵀW_k) of the projection weights (what the weights can do before the norm), while the
entropy diagnostics read the probabilities the layer really uses (captured after the norm).

Initialisations (``init``): "nanogpt" is nanoGPT's ``model.py`` (= GPT-2's): N(0, 0.02) for every
Linear and Embedding weight (token and position tables; ``lm_head`` is the token table), zero
biases, LayerNorm 1 / 0, and the residual projections (``attn.proj``, ``mlp.fc2``: nanoGPT's two
``c_proj``) redrawn at N(0, 0.02/√(2·n_layer)); "xavier" and "trunc_xavier" re-initialise every
Linear weight with the Table 2 scheme (see :mod:`weyl.models.weight_init`), embeddings staying
at N(0, 0.02). The paper's Table 2(b) lists "Xavier" for GPT, so ``configs/model/gpt2_s.yaml`` /
``gpt2_l.yaml`` set ``init: xavier``; Appendix N says GPT "follows nanoGPT", which the
``table1/gpt2_s_nanogpt_init_*`` recipes run (recipes/README.md, "GPT init").
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
from weyl.models.model_config import GPTModelConfig
from weyl.models.sigma_reparam import effective_weight
from weyl.models.weight_init import reinit_linears


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused qkv projection."""

    def __init__(
        self, n_embd: int, n_head: int, dropout: float, bias: bool, qk_norm: bool = False
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"model.n_embd={n_embd} must be divisible by model.n_head={n_head}")
        self.num_heads = n_head
        self.head_dim = n_embd // n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        norm = (lambda: nn.LayerNorm(self.head_dim, bias=bias)) if qk_norm else nn.Identity
        self.q_norm = norm()
        self.k_norm = norm()
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)
        self.fused_attn = True

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=True
            )
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
            att = self.attn_drop(att)
            y = att @ v
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.proj_drop(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network, 4× expansion with GELU."""

    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(
            cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias, qk_norm=cfg.qk_norm
        )
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, cfg.dropout, cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT-style decoder: ``forward(idx (B, T)) -> logits (B, T, vocab)``."""

    def __init__(self, cfg: GPTModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as GPT-2
        self.init_weights(cfg.init)

    @torch.no_grad()
    def init_weights(self, scheme: str) -> None:
        """(Re-)initialise all weights with ``scheme`` ("nanogpt", "xavier", "trunc_xavier")."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if scheme == "nanogpt":
            # GPT-2's scaling of the residual-path projections by 1/sqrt(number of residual adds).
            std = 0.02 / math.sqrt(2 * self.config.n_layer)
            for block in self.blocks:
                nn.init.normal_(block.attn.proj.weight, mean=0.0, std=std)
                nn.init.normal_(block.mlp.fc2.weight, mean=0.0, std=std)
        else:
            reinit_linears(self, scheme, skip=(self.lm_head,))

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` excludes the position table (as nanoGPT).

        The token table is counted once since it is tied to ``lm_head``.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def forward(self, idx: Tensor) -> Tensor:
        """Logits for every position of ``idx`` (B, T); no loss is computed here."""
        _, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(
                f"sequence length {t} exceeds model.block_size={self.config.block_size}"
            )
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def transformer_blocks(self) -> list[nn.Module]:
        """The residual blocks in depth order (what FSDP2 shards one by one)."""
        return list(self.blocks)

    def attention_views(self) -> list[AttentionLayerView]:
        """The attention view of every block (see :mod:`weyl.models.attention_view`)."""
        views = []
        for i, block in enumerate(self.blocks):
            attn = block.attn
            heads = attn.num_heads

            def qkv(i: int, attn: CausalSelfAttention = attn, heads: int = heads) -> Tensor:
                return fused_qkv_views(effective_weight(attn.qkv), heads)[i]

            views.append(
                AttentionLayerView(
                    index=i,
                    path=f"blocks.{i}.attn",
                    num_heads=heads,
                    head_dim=attn.head_dim,
                    dim=self.config.n_embd,
                    block=block,
                    attention=attn,
                    q_weight=lambda qkv=qkv: qkv(0),
                    k_weight=lambda qkv=qkv: qkv(1),
                    v_weight=lambda qkv=qkv: qkv(2),
                    o_weight=lambda a=attn, h=heads: split_cols_per_head(
                        effective_weight(a.proj), h
                    ),
                    mlp_w1=lambda b=block: effective_weight(b.mlp.fc1),
                    mlp_w2=lambda b=block: effective_weight(b.mlp.fc2),
                    norm1=block.ln_1,
                    norm2=block.ln_2,
                    enable_capture=capture_via_attn_drop(attn),
                    causal=True,
                    kind="softmax",
                    extra={
                        "qkv": attn.qkv,
                        "proj": attn.proj,
                        "fc1": block.mlp.fc1,
                        "fc2": block.mlp.fc2,
                    },
                )
            )
        return views
