"""StableAdamW (Wortsman et al. 2023, "Stable and low-precision training for large-scale
vision-language models", arXiv 2304.13013, where it is introduced as Algorithm 2): AdamW with
AdaFactor's update clipping as a per-tensor learning-rate scale.

Per tensor, at step t (β̂ = β·(1−β^{t−1})/(1−β^t), their bias-corrected EMA coefficients):

    v_t = β̂₂·v_{t−1} + (1−β̂₂)·g²,  m_t = β̂₁·m_{t−1} + (1−β̂₁)·g
    RMS_t = √mean(g² / max(v_t, ε²)),  η_t = α_t / max(1, RMS_t)
    θ_t = θ_{t−1} − η_t·λ·θ_{t−1} − η_t·m_t / (√v_t + ε)

We use ``pytorch_optimizer.StableAdamW`` (pinned in pyproject.toml): it computes exactly these
lines (``debias_beta``, the RMS over the *current* v_t floored at ε², decay scaled by η_t)
and is maintained, tested and ``foreach``-batched; tests/optim/test_stabilizers.py checks its
scale factor and update against the formulas above. Kahan summation (only active for
bf16/fp16 parameters) is left on, as the library and the paper's low-precision setting do.
"""

from __future__ import annotations

import torch


def stable_adamw(
    params: list[dict], *, lr: float, betas: tuple[float, float], eps: float
) -> torch.optim.Optimizer:
    """``pytorch_optimizer.StableAdamW`` with decoupled weight decay (taken per group)."""
    # lazily: the library imports its whole catalogue (~1 s)
    from pytorch_optimizer.optimizer.adamw import StableAdamW

    return StableAdamW(params, lr=lr, betas=betas, eps=eps, weight_decouple=True)
