"""The three attention modes of Appendix G: normal, malignant collapse, benign collapse.

Appendix G's construction, with W = W_qᵀW_k = U Σ Vᵀ of a random head:

- normal:    W itself;
- malignant: keep the top three singular directions, scaled by (3, 2, 1), drop the rest
             (rank 3: spectral energy concentration, SEC(d_q, 3) = 1 — Theorem 1);
- benign:    U Σ Uᵀ, symmetric positive semi-definite, so x_iᵀWx_i ≫ x_iᵀWx_j and the
             map tends to the identity (Appendix C).

Scale. The paper's code draws W_q, W_k, X from N(0, 1) and applies softmax to XᵀWX without
the 1/√d_q of the model's A = softmax(P/√d_q). At that scale every logit has a standard
deviation of order d·√d_q ≈ 6000, so even the "normal" map is one-hot (entropy 0) and only
the rank distinguishes the modes. By default we therefore draw W_q, W_k ~ N(0, 1/d) (the
usual init scale, logits of order 1), apply the 1/√d_q, and realise Theorem 1's second
condition ("the leading singular values are very large") by multiplying both collapse-mode
matrices by ``collapse_gain``. ``paper_scale=True`` reproduces the appendix literally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from weyl.diagnostics.attention_maps import attention_entropy, effective_rank
from weyl.diagnostics.collapse import AttentionMode, CollapseThresholds, classify_heads
from weyl.diagnostics.spectral import sec_index

MODE_NAMES = ("normal", "malignant", "benign")


@dataclass
class ModeResult:
    """One simulated mode: its attention map and the diagnostics measured on it."""

    name: str
    attention: Tensor  # (num_tokens, num_tokens), rows = queries
    entropy: float
    erank: float
    erank_fraction: float
    qk_sigma1: float
    sec: dict[int, float]
    label: AttentionMode


def simulate_attention_modes(
    d_q: int = 64,
    d: int = 768,
    num_tokens: int = 197,
    seed: int = 0,
    collapse_gain: float = 256.0,
    paper_scale: bool = False,
    sec_s: tuple[int, ...] = (1, 2, 4, 8),
    thresholds: CollapseThresholds | None = None,
) -> list[ModeResult]:
    """Build Appendix G's normal / malignant / benign maps and measure each (see module doc)."""
    if not 3 <= d_q < d:
        raise ValueError(f"modes need 3 <= d_q < d (rank-3 malignant head); got d_q={d_q}, d={d}")
    if num_tokens < 2:
        raise ValueError(f"modes need num_tokens >= 2; got {num_tokens}")
    if collapse_gain <= 0:
        raise ValueError(f"collapse_gain must be > 0; got {collapse_gain}")
    bad_s = [s for s in sec_s if not 1 <= s <= d_q]
    if bad_s:
        raise ValueError(f"sec_s values {bad_s} are outside 1..d_q={d_q}")
    gen = torch.Generator().manual_seed(seed)
    w_std = 1.0 if paper_scale else 1.0 / math.sqrt(d)
    wq = torch.randn(d_q, d, generator=gen) * w_std
    wk = torch.randn(d_q, d, generator=gen) * w_std
    x = torch.randn(d, num_tokens, generator=gen)
    w = wq.T @ wk
    u, sigma, vh = torch.linalg.svd(w)

    malignant_sigma = torch.zeros_like(sigma)
    malignant_sigma[:3] = torch.tensor([3.0, 2.0, 1.0]) * sigma[:3]
    gain = 1.0 if paper_scale else collapse_gain
    matrices = {
        "normal": w,
        "malignant": gain * (u * malignant_sigma) @ vh,
        "benign": gain * (u * sigma) @ u.T,
    }
    temperature = 1.0 if paper_scale else 1.0 / math.sqrt(d_q)
    t = thresholds or CollapseThresholds()
    results = []
    for name in MODE_NAMES:
        wm = matrices[name]
        attn = (x.T @ wm @ x * temperature).softmax(dim=-1)
        # W is d×d of rank <= d_q: its top d_q singular values carry all the energy.
        spectrum = torch.linalg.svdvals(wm)[:d_q]
        entropy = float(attention_entropy(attn))
        erank = float(effective_rank(attn))
        fraction = erank / num_tokens
        sec_small = sec_index(spectrum, t.sec_rank(d_q))
        label = classify_heads(
            torch.tensor([entropy]),
            torch.tensor([fraction]),
            sec_small.reshape(1),
            spectrum[:1],
            d_q,
            t,
        )
        results.append(
            ModeResult(
                name=name,
                attention=attn,
                entropy=entropy,
                erank=erank,
                erank_fraction=fraction,
                qk_sigma1=float(spectrum[0]),
                sec={s: float(sec_index(spectrum, s)) for s in sec_s},
                label=AttentionMode(int(label[0])),
            )
        )
    return results
