"""Classify attention heads as normal, benign collapse or malignant collapse (§3.3).

The paper's two entropy-collapse modes, both with a sparse map (entropy ≈ 0):

- *benign* (Appendix C, state B of Appendix P): the map is near-identity, sparse but full
  rank, and the spectrum of W_qᵀW_k is spread; the layer degenerates to a linear map but
  training continues;
- *malignant* (Theorem 1, Appendix D, state C of Appendix P): the map is sparse yet
  low-rank; training crashes.

Theorem 1 names the cause as two conditions on W = W_qᵀW_k that must hold *together*:
(1) spectral energy concentration, SEC(d_q, s) ≈ 1 for some s ≪ d_q, and (2) the leading
singular values are large. Here (1) is SEC(d_q, s*) ≥ ``sec`` (0.95; s* in
:meth:`CollapseThresholds.sec_rank`) and (2) is σ₁(W)/√d_q ≥ ``qk_logit`` (1.5). The second
is a logit scale: a logit is x_iᵀWx_j/√d_q, and for inputs whose projections on W's leading
singular vectors are of unit size (LayerNorm outputs with γ ≈ 1 have unit-variance
coordinates, so unit-variance projections on any unit vector) the leading direction moves a
logit by σ₁/√d_q nats per unit of that product. A concentrated head below that scale is
rank-deficient but still nearly uniform — it cannot collapse the map, which is why SEC alone
is not Theorem 1. The value 1.5 is measured: in the CPU demo (``weyl demo``, d_q = 32,
3 runs × 21 diagnostics × 16 heads) every head that AdamW² trained stayed at σ₁/√d_q ≤ 1.05
(48 of its head-checks had SEC ≥ 0.95 all the same, all with dense maps), and 220 of the 221
head-checks whose map collapsed malignantly had σ₁/√d_q ≥ 1.5 (the lowest 1.46). Weights at
init (std 0.02, d = 768, d_q = 64) sit near 0.04; the paper's crashed runs reach σ₁ of
2·10⁴ (GPT) to 3·10⁵ (ViT), far above it.

Rule, per head (``entropy``, ``sec`` and ``qk_logit`` come from ``DiagnosticsConfig``):

1. entropy ≥ ``entropy`` → NORMAL (a dense, or only moderately sparse, map; a low-rank but
   dense map such as uniform attention — state A of Appendix P — is normal too);
2. otherwise the map is collapsed. It is MALIGNANT when the map itself is low-rank
   (erank / min(N_q, N_k) < ``rank_fraction``: sparse yet low-rank is the definition) *or*
   both conditions of Theorem 1 hold (the cause, which can show before a probe map looks
   low-rank);
3. otherwise BENIGN.

A layer takes the worst label of its heads. When no map was captured (e.g. a layer kind
without a capture) the label comes from Theorem 1 alone: MALIGNANT when both conditions
hold, else NORMAL — entropy is unknown, so benign cannot be told apart from normal.

The labels are computed on the device of the map statistics (of ``sec_small`` when there
are none); per-head weight statistics on another device are moved there first, so a map
measured on a GPU and spectra brought to the host mix without error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

ENTROPY_COLLAPSE = 0.2  # nats, mean row entropy below which a map counts as sparse
RANK_LOW_FRACTION = 0.25  # erank / min(N_q, N_k) below which a map counts as low-rank
SEC_CONCENTRATED = 0.95  # SEC(d_q, s*) at or above which W_qᵀW_k counts as concentrated
QK_LOGIT_LARGE = 1.5  # σ₁(W_qᵀW_k)/√d_q at or above which σ₁ counts as large (module doc)
SEC_RANK_DIVISOR = 16  # s* = d_q / 16 for wide heads (d_q > 64)
SEC_RANK_SMALL = 4  # s* = 4 for 16 <= d_q <= 64: the paper's "SEC(64, 4) > 99%" example


class AttentionMode(IntEnum):
    """Label of a head or layer; the integer is what ``collapse/Lxx`` logs."""

    NORMAL = 0
    BENIGN = 1
    MALIGNANT = 2


@dataclass(frozen=True)
class CollapseThresholds:
    """Thresholds of the collapse rule (see the module docstring)."""

    entropy: float = ENTROPY_COLLAPSE
    rank_fraction: float = RANK_LOW_FRACTION
    sec: float = SEC_CONCENTRATED
    qk_logit: float = QK_LOGIT_LARGE
    sec_rank_divisor: int = SEC_RANK_DIVISOR
    sec_rank_small: int = SEC_RANK_SMALL

    def __post_init__(self) -> None:
        if self.entropy <= 0:
            raise ValueError(f"diagnostics.entropy_collapse must be > 0; got {self.entropy}")
        if not 0 < self.rank_fraction <= 1:
            raise ValueError(f"collapse rank_fraction must be in (0, 1]; got {self.rank_fraction}")
        if not 0 < self.sec <= 1:
            raise ValueError(f"diagnostics.sec_concentrated must be in (0, 1]; got {self.sec}")
        if not self.qk_logit >= 0:
            raise ValueError(f"diagnostics.qk_logit_large must be >= 0; got {self.qk_logit}")
        if self.sec_rank_divisor < 1 or self.sec_rank_small < 1:
            raise ValueError(
                "collapse sec_rank_divisor and sec_rank_small must be >= 1; got "
                f"{self.sec_rank_divisor}, {self.sec_rank_small}"
            )

    def sec_rank(self, head_dim: int) -> int:
        """The s* at which concentration is tested for heads of dimension ``head_dim``.

        s* = max(d_q // 16, min(4, d_q // 4)), at least 1: 4 for 16 ≤ d_q ≤ 64 (the paper's
        SEC(64, 4) example), d_q/16 for wider heads, and never more than a quarter of d_q so
        that "s ≪ d_q" (Theorem 1) still holds for the narrow heads of small models.
        """
        small = min(self.sec_rank_small, head_dim // 4)
        return max(1, head_dim // self.sec_rank_divisor, small)


def theorem1_holds(
    sec_small: Tensor,
    qk_sigma1: Tensor,
    head_dim: int,
    thresholds: CollapseThresholds | None = None,
) -> Tensor:
    """Per head: both conditions of Theorem 1 (SEC(d_q, s*) ≥ sec and σ₁/√d_q ≥ qk_logit).

    NaN (all-zero weights) satisfies neither. The result is on ``sec_small``'s device.
    """
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1; got {head_dim}")
    t = thresholds or CollapseThresholds()
    concentrated = sec_small >= t.sec
    large = qk_sigma1.to(sec_small.device) >= t.qk_logit * math.sqrt(head_dim)
    return concentrated & large


def classify_heads(
    entropy: Tensor | None,
    erank_fraction: Tensor | None,
    sec_small: Tensor,
    qk_sigma1: Tensor,
    head_dim: int,
    thresholds: CollapseThresholds | None = None,
) -> Tensor:
    """Per-head labels (int64 tensor of :class:`AttentionMode` values), rule in the module doc.

    ``entropy`` and ``erank_fraction`` (erank / min(N_q, N_k)) are per-head map statistics,
    or ``None`` when no map was captured; ``sec_small`` is SEC(d_q, s*) and ``qk_sigma1``
    σ₁(W_qᵀW_k) per head, ``head_dim`` is d_q.
    """
    t = thresholds or CollapseThresholds()
    device = sec_small.device if entropy is None else entropy.device
    cause = theorem1_holds(sec_small.to(device), qk_sigma1, head_dim, t)
    normal = torch.zeros_like(cause, dtype=torch.int64)
    malignant = torch.full_like(normal, int(AttentionMode.MALIGNANT))
    if entropy is None or erank_fraction is None:
        return torch.where(cause, malignant, normal)
    collapsed = entropy < t.entropy
    low_rank = erank_fraction.to(device) < t.rank_fraction
    benign = torch.full_like(normal, int(AttentionMode.BENIGN))
    labels = torch.where(collapsed, benign, normal)
    return torch.where(collapsed & (low_rank | cause), malignant, labels)
