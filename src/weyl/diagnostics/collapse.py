"""Classify attention heads as normal, benign collapse or malignant collapse (§3.3).

The paper's two entropy-collapse modes, both with a sparse map (entropy ≈ 0):

- *benign* (Appendix C, state B of Appendix P): the map is near-identity, sparse but full
  rank, and the spectrum of W_qᵀW_k is spread; the layer degenerates to a linear map but
  training continues;
- *malignant* (Theorem 1, Appendix D, state C of Appendix P): the map is sparse yet
  low-rank, caused by spectral energy concentration of W_qᵀW_k (SEC(d_q, s) ≈ 1 for
  s ≪ d_q with large leading singular values); training crashes.

Rule, per head (thresholds are the constants below, overridable via
:class:`CollapseThresholds`; the first and third come from ``DiagnosticsConfig``):

1. entropy ≥ ``entropy`` → NORMAL (a dense, or only moderately sparse, map; a low-rank but
   dense map such as uniform attention — state A of Appendix P — is normal too);
2. otherwise the map is collapsed. It is MALIGNANT when it is low-rank
   (erank / min(N_q, N_k) < ``rank_fraction``) *or* W_qᵀW_k is spectrally concentrated
   (SEC(d_q, s*) ≥ ``sec``, see :meth:`CollapseThresholds.sec_rank` for s*); SEC counts on its
   own because Theorem 1 makes it the cause, and a probe map can still look full-rank while
   the weights have already concentrated;
3. otherwise BENIGN.

A layer takes the worst label of its heads. When no map was captured (e.g. a layer kind
without a capture) the label is computed from SEC alone: MALIGNANT if concentrated, else
NORMAL — entropy is unknown, so benign cannot be told apart from normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

ENTROPY_COLLAPSE = 0.2  # nats, mean row entropy below which a map counts as sparse
RANK_LOW_FRACTION = 0.25  # erank / min(N_q, N_k) below which a map counts as low-rank
SEC_CONCENTRATED = 0.95  # SEC(d_q, s*) at or above which W_qᵀW_k counts as concentrated
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
    sec_rank_divisor: int = SEC_RANK_DIVISOR
    sec_rank_small: int = SEC_RANK_SMALL

    def __post_init__(self) -> None:
        if self.entropy <= 0:
            raise ValueError(f"diagnostics.entropy_collapse must be > 0; got {self.entropy}")
        if not 0 < self.rank_fraction <= 1:
            raise ValueError(f"collapse rank_fraction must be in (0, 1]; got {self.rank_fraction}")
        if not 0 < self.sec <= 1:
            raise ValueError(f"diagnostics.sec_concentrated must be in (0, 1]; got {self.sec}")
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


def classify_heads(
    entropy: Tensor | None,
    erank_fraction: Tensor | None,
    sec_small: Tensor,
    thresholds: CollapseThresholds | None = None,
) -> Tensor:
    """Per-head labels (int64 tensor of :class:`AttentionMode` values).

    ``entropy`` and ``erank_fraction`` (erank / min(N_q, N_k)) are per-head map statistics,
    or ``None`` when no map was captured; ``sec_small`` is SEC(d_q, s*) per head.
    """
    t = thresholds or CollapseThresholds()
    concentrated = sec_small >= t.sec  # NaN (zero weights) compares False
    if entropy is None or erank_fraction is None:
        return torch.where(concentrated, int(AttentionMode.MALIGNANT), int(AttentionMode.NORMAL))
    collapsed = entropy < t.entropy
    low_rank = erank_fraction < t.rank_fraction
    labels = torch.full_like(entropy, int(AttentionMode.NORMAL), dtype=torch.int64)
    labels[collapsed] = int(AttentionMode.BENIGN)
    labels[collapsed & (low_rank | concentrated)] = int(AttentionMode.MALIGNANT)
    return labels
