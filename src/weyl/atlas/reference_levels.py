"""Two reference levels that name what a run that learned little is stuck at.

- The **unigram loss** ℓ₁: the cross-entropy on the validation split of the prediction that
  ignores the context and always outputs the training split's token frequencies (with add-one
  smoothing, so a token unseen in training costs a finite loss). A character LM that ends at
  ℓ₁ has learned the letter frequencies and nothing else: the "stall" the CPU demo's runs hit
  at high LR (KJV characters: ℓ₁ ≈ 3.02, far below ℓ₀ = ln 128 = 4.85).
- The **uniform attention entropy** H_u(T): the mean row entropy of a causal attention map that
  spreads every query evenly over its visible keys, (1/T) Σ_{i=1..T} ln i. A layer that ends at
  H_u attends to nothing in particular: its attention never left the near-uniform pattern of a
  small initialisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

# A final eval loss within this many nats of ℓ₁ (or above it) is a stall at the unigram loss.
STALL_MARGIN = 0.05
# Every layer ending with entropy at least this fraction of H_u: attention stayed uniform.
UNIFORM_FRACTION = 0.998


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Cross-entropy (nats) of ``val`` under ``train``'s add-one-smoothed token frequencies."""
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab)[:vocab] + 1.0
    log_p = np.log(counts) - math.log(float(counts.sum()))
    seen = np.bincount(np.asarray(val, dtype=np.int64), minlength=vocab)[:vocab]
    return float(-(seen * log_p).sum() / max(1, int(seen.sum())))


def data_unigram_loss(data_cfg: Any, vocab: int) -> float | None:
    """ℓ₁ of a text recipe's prepared token set; None when its bins are not there (not prepared
    yet, or an image recipe)."""
    from weyl.data.factory import text_data_dir
    from weyl.data.token_bins import open_tokens

    if not hasattr(data_cfg, "tokenizer"):
        return None
    folder: Path = text_data_dir(data_cfg)
    if not ((folder / "train.bin").is_file() and (folder / "val.bin").is_file()):
        return None
    return unigram_loss(open_tokens(folder / "train.bin"), open_tokens(folder / "val.bin"), vocab)


def uniform_causal_entropy(context: int) -> float:
    """H_u(T) = (1/T) Σ_{i=1..T} ln i: mean row entropy of a uniform causal map over T tokens."""
    if context < 1:
        raise ValueError(f"context must be ≥ 1; got {context}")
    return math.lgamma(context + 1) / context
