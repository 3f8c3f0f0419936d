"""The diagnostics' config, checked when it is built (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from weyl.value_checks import require


@dataclass
class DiagnosticsConfig:
    enabled: bool = True
    every: int = 100
    probe_batch_size: int = 4
    sec_s: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # The 15 terms of Fig. 1 (needs a backward pass on the probe batch).
    terms: bool = True
    # Per-head keys (attn/Lxx/hNN/...) besides the per-layer max/mean; off for very deep models.
    per_head: bool = True
    # Probe maps per layer whose SVD gives the effective rank (bounds the cost).
    rank_samples: int = 4
    # Save the first probe sample's attention maps (fp16, all heads) to <run_dir>/attention/
    # every N steps for Fig. 2/3 in `weyl report`; 0 = never (H·N² per layer: large for long contexts).
    attention_maps_every: int = 0
    # Collapse classifier thresholds (see weyl.diagnostics.collapse).
    entropy_collapse: float = 0.2
    sec_concentrated: float = 0.95
    # Theorem 1's "large leading singular value": σ₁(W_qᵀW_k)/√d_q at or above it.
    qk_logit_large: float = 1.5

    def __post_init__(self) -> None:
        require(self.every > 0, "diagnostics.every", f"must be > 0, got {self.every}")
        require(
            self.probe_batch_size > 0,
            "diagnostics.probe_batch_size",
            f"must be > 0, got {self.probe_batch_size}",
        )
        require(
            bool(self.sec_s) and all(s > 0 for s in self.sec_s),
            "diagnostics.sec_s",
            f"needs positive integers, got {list(self.sec_s)}",
        )
        require(
            self.entropy_collapse > 0,
            "diagnostics.entropy_collapse",
            f"must be > 0, got {self.entropy_collapse}",
        )
        require(
            0 < self.sec_concentrated <= 1,
            "diagnostics.sec_concentrated",
            f"must be in (0, 1], got {self.sec_concentrated}",
        )
        require(
            self.qk_logit_large >= 0,
            "diagnostics.qk_logit_large",
            f"must be >= 0, got {self.qk_logit_large}",
        )
