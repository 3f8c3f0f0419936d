"""Statistics of attention probability maps: row entropy and effective rank.

Maps are (..., N_q, N_k) row-stochastic tensors as captured by the attention view; masked
(causal) entries are exact zeros and contribute 0·log 0 = 0.

Effective rank (Roy & Vetterli, 2007, "The effective rank: a measure of effective
dimensionality"): with singular values σ_1..σ_r of the map and p_i = σ_i / Σ_j σ_j,

    erank(A) = exp(H(p)) = exp(-Σ_i p_i log p_i),

a continuous rank between 1 (rank one, e.g. every query attends to the same key) and
min(N_q, N_k) (all singular values equal, e.g. the identity map). The paper's two collapse
modes differ exactly here: both are sparse (entropy ≈ 0), benign is near-identity
(erank ≈ N), malignant is low-rank (erank ≪ N).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor


def attention_entropy(maps: Tensor) -> Tensor:
    """Mean over query rows of the row entropy -Σ_k a log a (nats): (..., N_q, N_k) → (...)."""
    if maps.dim() < 2:
        raise ValueError(f"attention maps must be (..., N_q, N_k); got shape {tuple(maps.shape)}")
    maps = maps.float()
    # clamp: rounding (a row summing to 1 + ε) must not report a negative entropy or -0.0
    return (-torch.xlogy(maps, maps).sum(-1)).clamp_min(0.0).mean(-1)


def effective_rank(maps: Tensor) -> Tensor:
    """Roy–Vetterli effective rank exp(H(σ/Σσ)) of each map: (..., N_q, N_k) → (...).

    NaN for an all-zero map (no singular value mass to normalise).
    """
    if maps.dim() < 2:
        raise ValueError(f"attention maps must be (..., N_q, N_k); got shape {tuple(maps.shape)}")
    sigma = torch.linalg.svdvals(maps.float())
    total = sigma.sum(-1, keepdim=True)
    p = sigma / total.clamp_min(torch.finfo(sigma.dtype).tiny)
    erank = torch.exp(-torch.xlogy(p, p).sum(-1))
    return torch.where(total.squeeze(-1) > 0, erank, torch.nan)


def sampled_effective_rank(maps: Tensor, queries: int) -> tuple[Tensor, Tensor]:
    """(erank, erank / min(m, N_k)) of each map from ``m = queries`` of its query rows.

    The cheap route for long contexts: m rows at evenly spaced positions (first and last
    included, so a causal map keeps its staircase) form S·A (m × N_k); the eigenvalues of its
    m × m Gram S·A·Aᵀ·Sᵀ, in float64 (squaring the condition number costs fp32 the small
    singular values) are the squared singular values of S·A. Its erank is at most m, so the
    fraction is taken against min(m, N_k): 1 for an identity-like (benign) map as for the full
    map, ≈ r/m for a rank-r (malignant) one. With m ≥ N_q this is :func:`effective_rank` and
    erank / min(N_q, N_k) exactly. Measured against the full SVD (benchmarks/diagnostics.py,
    part c, m = N/4): the low-rank verdict (< 0.25) agrees on every identity-like and rank ≤ 8
    map, as it must while r < m/4; dense maps read higher (erank/m 0.75 vs erank/N 0.48), and
    a collapsed map of erank between m/4 and N/4 would read as not low-rank.
    """
    if maps.dim() < 2:
        raise ValueError(f"attention maps must be (..., N_q, N_k); got shape {tuple(maps.shape)}")
    if queries < 1:
        raise ValueError(f"diagnostics.rank_queries must be >= 1 (0: all rows); got {queries}")
    n_q, n_k = maps.shape[-2:]
    if queries >= n_q:
        erank = effective_rank(maps)
        return erank, erank / min(n_q, n_k)
    rows = torch.linspace(0, n_q - 1, queries, device=maps.device).round().long()
    sampled = maps.index_select(-2, rows).double()
    eig = torch.linalg.eigvalsh(sampled @ sampled.mT)
    # eigenvalues below the Gram's rounding level are zeros of a rank-deficient map
    floor = eig[..., -1:] * (queries * torch.finfo(torch.float64).eps)
    sigma = torch.where(eig > floor, eig, 0.0).sqrt()
    total = sigma.sum(-1, keepdim=True)
    p = sigma / total.clamp_min(torch.finfo(sigma.dtype).tiny)
    erank = torch.exp(-torch.xlogy(p, p).sum(-1))
    erank = torch.where(total.squeeze(-1) > 0, erank, torch.nan).float()
    return erank, erank / min(queries, n_k)


def save_probe_attention(model: torch.nn.Module, inputs: Tensor, path: str | Path) -> Path:
    """Save the first probe sample's attention maps, ``{layer: (H, N_q, N_k) fp16}``, atomically.

    These are the maps of the paper's Fig. 2/3, drawn by ``weyl report``; one sample (the
    first window for Swin) keeps a file at H·N² half floats per layer.
    """
    from weyl.models.attention_view import probe_attention

    maps = probe_attention(model, inputs[:1])
    small = {name: m[0].to(torch.float16).contiguous() for name, m in maps.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(small, tmp)
    os.replace(tmp, path)
    return path
