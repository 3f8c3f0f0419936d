"""Singular values of weight products without forming them: σ(WqᵀWk), σ(WoWv), σ(W2W1), SEC.

The maths of the small-matrix route (:func:`product_singular_values`). Let ``A`` be m×k and
``B`` be k×n with k < min(m, n) (for one head: ``A = W_qᵀ`` is d×d_q and ``B = W_k`` is
d_q×d). Take thin Householder QR factorisations

    A  = Q_a R_a     (Q_a: m×k with orthonormal columns, R_a: k×k upper triangular)
    Bᵀ = Q_b R_b     (Q_b: n×k with orthonormal columns, R_b: k×k upper triangular)

so that ``A B = Q_a (R_a R_bᵀ) Q_bᵀ``. Multiplying by matrices with orthonormal columns
(on the left) and orthonormal rows (on the right) preserves singular values, hence the
non-zero singular values of the m×n product are exactly those of the k×k core
``R_a R_bᵀ``: one k×k SVD instead of an m×n one, and the product is never formed.

Why not the Gram route (eigenvalues of ``(AB)ᵀ(AB)`` or of ``AᵀA · BBᵀ``)? It squares the
condition number, so in fp32 every singular value below ~√ε·σ₁ ≈ 3e-4·σ₁ is lost.
Householder QR is backward stable and works unchanged on rank-deficient factors (R then
has zeros on its diagonal, Q stays orthonormal), so the core's singular values carry a
normwise error of order ε·σ₁(A)·σ₁(B), the same as an SVD of the explicit product.

Everything is batched over leading dimensions (heads, layers) and computed in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor


def product_singular_values(a: Tensor, b: Tensor) -> Tensor:
    """Non-zero-rank singular values of ``a @ b`` (descending), batched, in fp32.

    ``a``: (..., m, k), ``b``: (..., k, n) → (..., min(m, k, n)). Uses the QR core
    ``R_a R_bᵀ`` when k < min(m, n) (see the module docstring), else the product itself.
    """
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"product_singular_values needs a (..., m, k) and b (..., k, n); got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    a, b = a.detach().float(), b.detach().float()
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if k < min(m, n):
        # mode="r" skips forming Q: only the triangular factors are needed.
        _, r_a = torch.linalg.qr(a, mode="r")
        _, r_b = torch.linalg.qr(b.mT, mode="r")
        return torch.linalg.svdvals(r_a @ r_b.mT)
    return torch.linalg.svdvals(a @ b)


def spectral_norm(w: Tensor) -> Tensor:
    """σ₁ of ``w`` (..., m, n), batched, fp32, exact (not a power-iteration estimate).

    Computed as √λ_max of the smaller Gram matrix: squaring the condition number only
    costs accuracy in the *small* singular values, λ_max keeps a relative error ~ε.
    """
    if w.dim() < 2:
        raise ValueError(f"spectral_norm needs a (..., m, n) matrix; got shape {tuple(w.shape)}")
    w = w.detach().float()
    gram = w @ w.mT if w.shape[-2] <= w.shape[-1] else w.mT @ w
    return torch.linalg.eigvalsh(gram)[..., -1].clamp_min(0.0).sqrt()


def product_spectral_norm(a: Tensor, b: Tensor) -> Tensor:
    """σ₁(``a @ b``) for (..., m, k) @ (..., k, n), via the QR core when k < min(m, n)."""
    if a.shape[-1] < min(a.shape[-2], b.shape[-1]):
        return product_singular_values(a, b)[..., 0]
    return spectral_norm(a.detach().float() @ b.detach().float())


def sec_index(singular_values: Tensor, s: int) -> Tensor:
    """SEC(d_q, s) of Eq. 4: Σ_{i≤s} σ_i² / Σ_{i≤d_q} σ_i², over the last dim (descending σ).

    NaN where all singular values are zero (a zero matrix has no spectral energy to share).
    """
    r = singular_values.shape[-1]
    if not 1 <= s <= r:
        raise ValueError(f"SEC needs 1 <= s <= d_q={r}; got s={s}")
    energy = singular_values.float().square()
    total = energy.sum(-1)
    top = energy[..., :s].sum(-1)
    return torch.where(total > 0, top / total.clamp_min(torch.finfo(total.dtype).tiny), torch.nan)


def qk_singular_values(q: Tensor, k: Tensor) -> Tensor:
    """σ(W_qᵀ W_k) per head from per-head weights ``q``, ``k`` of shape (..., H, d_q, d)."""
    return product_singular_values(q.mT, k)


def ov_singular_values(o: Tensor, v: Tensor) -> Tensor:
    """σ(W_o W_v) per head from ``o`` (..., H, d, d_q) and ``v`` (..., H, d_q, d)."""
    return product_singular_values(o, v)
