"""Tiny models and an independent per-tensor reference of Algorithm 1 for the optimizer tests."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TinyTransformer(nn.Module):
    """Conv stem + cls token + (1, N, d) pos embedding + a 2-layer encoder + head."""

    def __init__(self, d: int = 16, heads: int = 2, layers: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, d, kernel_size=2, stride=2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # (B, 4, d) from 4×4 images
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.encoder(h))[:, 0])

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}


def batch(seed: int, n: int = 8) -> tuple[Tensor, Tensor]:
    """A fixed random classification batch of 4×4 one-channel images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def loss_of(model: nn.Module, seed: int) -> Tensor:
    """Cross-entropy of ``model`` on batch ``seed``."""
    x, y = batch(seed)
    return nn.functional.cross_entropy(model(x), y)


def exact_sigma(t: Tensor) -> float:
    """σ₁ by the documented rule, written out independently: strip leading 1s, flatten the rest."""
    dims = list(t.shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    if len(dims) <= 1:
        return t.double().flatten().norm().item()
    m = t.double().reshape(dims[0], math.prod(dims[1:]))
    return torch.linalg.matrix_norm(m, ord=2).item()


class ReferenceAdamW2:
    """Algorithm 1 as a plain per-tensor loop with exact σ₁ (float64 SVD) and the σ floor.

    ``tau`` may be changed between steps; ``None`` is plain AdamW.
    """

    def __init__(self, params, lr, betas, eps, weight_decay, tau, sigma_floor) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
        self.tau, self.floor = tau, sigma_floor
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        self.lr_eff: list[float] = []

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        self.lr_eff = []
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            delta = m_hat / (v_hat.sqrt() + self.eps)
            alpha = self.lr
            s_d = exact_sigma(delta)
            s_w = max(exact_sigma(p), self.floor)
            # Rule 1 as α·σ₁(ΔW) > τ·σ₁(W): also defined at σ₁(W) = 0 (floor 0), where α = 0.
            if self.tau is not None and s_d > 0 and alpha * s_d > self.tau * s_w:
                alpha = self.tau * s_w / s_d
            self.lr_eff.append(alpha)
            p.sub_(alpha * delta + alpha * self.wd * p)
