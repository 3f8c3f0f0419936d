"""Two reference levels that name what a run that learned little is stuck at.

- The **unigram loss** ℓ₁: the cross-entropy on the validation split of the prediction that
  ignores the context and always outputs the training split's token frequencies (with add-one
  smoothing, so a token unseen in training costs a finite loss). A character LM that ends at
  ℓ₁ has learned the letter frequencies and nothing else: the "stall" the CPU demo's runs hit
  at high LR (KJV characters: ℓ₁ ≈ 3.02, far below ℓ₀ = ln 128 = 4.85). A split larger than
  ``MAX_COUNTED`` tokens (OpenWebText's 9B) is counted on evenly spaced contiguous chunks of it,
  so an atlas reads ~256 MiB, not the whole set, each time it writes its outputs.
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
# Token counts for ℓ₁ read at most this many tokens of a split, in chunks of COUNT_CHUNK.
MAX_COUNTED = 1 << 27
COUNT_CHUNK = 1 << 20


def counted_chunks(tokens: np.ndarray) -> list[np.ndarray]:
    """``tokens`` in chunks of ``COUNT_CHUNK``: all of them when at most ``MAX_COUNTED`` long,
    else ``MAX_COUNTED // COUNT_CHUNK`` chunks at evenly spaced offsets (a memmap reads only
    those pages)."""
    n = len(tokens)
    if n <= MAX_COUNTED:
        starts = range(0, n, COUNT_CHUNK)
    else:
        starts = np.linspace(0, n - COUNT_CHUNK, MAX_COUNTED // COUNT_CHUNK).astype(np.int64)
    return [tokens[s : s + COUNT_CHUNK] for s in starts]


def token_counts(tokens: np.ndarray, vocab: int) -> np.ndarray:
    """How often each id below ``vocab`` occurs in :func:`counted_chunks` of ``tokens`` (float64;
    one chunk at a time, so no int64 copy of a large split)."""
    counts = np.zeros(vocab)
    for chunk in counted_chunks(tokens):
        counts += np.bincount(chunk, minlength=vocab)[:vocab]
    return counts


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Cross-entropy (nats) of ``val`` under ``train``'s add-one-smoothed token frequencies."""
    counts = token_counts(train, vocab) + 1.0
    log_p = np.log(counts) - math.log(float(counts.sum()))
    seen = token_counts(val, vocab)
    return float(-(seen * log_p).sum() / max(1.0, float(seen.sum())))


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
