"""The diagnostics' config, checked when it is built (no torch import here)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from weyl.value_checks import require

# diagnostics.lr_layers entries: a position in depth, every block, or a block index (3 or L03).
LAYER_POSITIONS = ("first", "middle", "last", "all")
_LAYER_INDEX = re.compile(r"^L?(\d+)$")


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
    # Query rows per probe map (evenly spaced) whose Gram eigenvalues give the effective rank;
    # 0 = all rows (the full SVD). Cheap at long contexts; error: benchmarks/diagnostics.py.
    rank_queries: int = 256
    # Save the first probe sample's attention maps (fp16, all heads) to <run_dir>/attention/
    # every N steps for Fig. 2/3 in `weyl report`; 0 = never (H·N² per layer: large for long contexts).
    attention_maps_every: int = 0
    # Collapse classifier thresholds (see weyl.diagnostics.collapse).
    entropy_collapse: float = 0.2
    sec_concentrated: float = 0.95
    # Theorem 1's "large leading singular value": σ₁(W_qᵀW_k)/√d_q at or above it.
    qk_logit_large: float = 1.5
    # Fig. 15: every N optimizer steps, each tensor's effective LR and clip flag of the blocks in
    # lr_layers (keys lr/Lxx/<tensor>, clip/Lxx/<tensor>); 0 = off. Independent of `every`: the
    # optimizer records them each step, reading them is one host transfer.
    lr_every: int = 50
    # first / middle / last (the paper's Block 0 / 6 / 11 of GPT-2 S), all, or block indices.
    lr_layers: list[str] = field(default_factory=lambda: ["first", "middle", "last"])

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
            self.rank_queries >= 0,
            "diagnostics.rank_queries",
            f"must be >= 0 (0 = every query row), got {self.rank_queries}",
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
        require(
            self.lr_every >= 0,
            "diagnostics.lr_every",
            f"must be >= 0 (0 turns the per-tensor LR log off), got {self.lr_every}",
        )
        bad = [str(x) for x in self.lr_layers if not _layer_token_ok(str(x))]
        require(
            bool(self.lr_layers) and not bad,
            "diagnostics.lr_layers",
            f"takes {', '.join(LAYER_POSITIONS)} or block indices (3 or L03); got "
            f"{list(self.lr_layers)}",
        )


def _layer_token_ok(token: str) -> bool:
    return token in LAYER_POSITIONS or _LAYER_INDEX.match(token) is not None


def select_lr_layers(layers: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The names among ``layers`` (``L00``… in depth order) that ``diagnostics.lr_layers`` picks."""
    if not layers:
        return []
    chosen: set[str] = set()
    for token in (str(w) for w in wanted):
        if token == "all":
            chosen.update(layers)
        elif token in ("first", "middle", "last"):
            position = {"first": 0, "middle": len(layers) // 2, "last": len(layers) - 1}
            chosen.add(layers[position[token]])
        elif (match := _LAYER_INDEX.match(token)) is not None:
            name = f"L{int(match.group(1)):02d}"
            require(
                name in layers,
                "diagnostics.lr_layers",
                f"block {token} does not exist; the model has {layers[0]}..{layers[-1]}",
            )
            chosen.add(name)
        else:
            require(False, "diagnostics.lr_layers", f"unknown entry {token!r}")
    return [name for name in layers if name in chosen]
