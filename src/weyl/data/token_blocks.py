"""Contiguous blocks from a token memmap: the infinite training stream and the val pass.

Training blocks start at uniformly random offsets (as nanoGPT's ``get_batch``) in one global
order: the offsets ``torch.randint`` draws one after another from a generator seeded with
``stream_seed(seed, 0)``. Rank ``r`` of ``W``, micro batch ``B``, takes global samples
``(c·W + r)·B … +B`` in its ``c``-th batch (it draws the other ranks' samples and drops them:
``G`` integers per update, nothing beside a forward pass), so the ``accum`` micro batches of all
ranks in one update cover global samples ``[u·G, (u+1)·G)`` (``G`` the global batch) whatever
``W``, ``B`` and ``accum`` are. At one rank this is exactly the stream weyl drew before the
global order (one generator per rank, rank 0's seed), so single-process runs and their
checkpoints are unchanged. The position is the global sample counter: a checkpoint taken at
``W`` ranks resumes at any ``W'`` with every sample served once (given the same global batch);
the generator state saved beside it only saves the replay of the draws up to there.
Validation uses non-overlapping blocks in a fixed shuffled order, strided over ranks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from weyl.data.token_bins import open_tokens

VAL_ORDER_SEED = 1337


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_seed(seed: int, rank: int, *extra: int) -> int:
    """A 63-bit seed mixing ``(seed, rank, *extra)`` (splitmix64) so nearby tuples are unrelated."""
    h = 0
    for word in (seed, rank, *extra):
        h = _splitmix64(h ^ (int(word) & _MASK64))
    return h >> 1


def _blocks_at(tokens: np.ndarray, starts: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    rows = [
        torch.from_numpy(tokens[s : s + block_size + 1].astype(np.int64)) for s in starts.tolist()
    ]
    window = torch.stack(rows)
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


class TokenBlockStream:
    """Infinite iterator of ``(x, y)`` int64 ``(B, T)`` batches, y = x shifted by one token."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        block_size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if block_size < 1 or batch_size < 1:
            raise ValueError(
                f"block_size and batch_size must be >= 1, got {block_size}, {batch_size}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}"
            )
        self.path = Path(path)
        self.block_size, self.batch_size = block_size, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_tokens = len(open_tokens(self.path))
        if self.num_tokens < block_size + 1:
            raise ValueError(
                f"{self.path} has {self.num_tokens} tokens, fewer than block_size+1={block_size + 1}; "
                "lower data.block_size"
            )
        self.batches_served = 0
        self.generator = torch.Generator().manual_seed(stream_seed(seed, 0))
        self.drawn = 0  # global samples drawn from the generator so far

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self

    def next_samples(self) -> range:
        """Global indices of the samples the next batch of this rank holds."""
        first = (self.batches_served * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __next__(self) -> tuple[Tensor, Tensor]:
        starts = self._draw(self.next_samples())
        # A fresh memmap per batch keeps resident pages from piling up over long runs.
        batch = _blocks_at(open_tokens(self.path), starts, self.block_size)
        self.batches_served += 1
        return batch

    def _draw(self, samples: range) -> Tensor:
        """Offsets of the global ``samples`` (at or after ``drawn``), skipping the ones before."""
        span = self.num_tokens - self.block_size
        if samples.start < self.drawn:
            raise RuntimeError(f"sample {samples.start} was already drawn ({self.drawn})")
        skip = samples.start - self.drawn
        while skip:  # other ranks' samples, or a resume without the generator's state
            n = min(skip, 1 << 20)
            torch.randint(span, (n,), generator=self.generator)
            skip -= n
        self.drawn = samples.stop
        return torch.randint(span, (len(samples),), generator=self.generator)

    @property
    def samples_served(self) -> int:
        """Global samples all ranks together have consumed (at a boundary of this rank's batch)."""
        return self.batches_served * self.world_size * self.batch_size

    def state_dict(self) -> dict[str, Any]:
        """The global sample counter (world-size free) and what identifies the stream."""
        return {
            "samples": self.samples_served,
            "generator": self.generator.get_state(),
            "drawn": self.drawn,
            "batches_served": self.batches_served,
            "seed": self.seed,
            "num_tokens": self.num_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved at any world size and micro batch with the same global batch
        (ValueError if the data file changed size or the position falls inside this layout's
        batch)."""
        if int(state["num_tokens"]) != self.num_tokens:
            raise ValueError(
                f"checkpointed stream had {state['num_tokens']} tokens, {self.path} has "
                f"{self.num_tokens}: the data set changed since the checkpoint"
            )
        per_batch = self.world_size * self.batch_size
        if "samples" not in state:
            # Saved before the global order: one generator per rank, seeded (seed, rank); rank
            # 0's was the global order, so only its count converts (the others' draws are lost).
            samples = int(state["batches_served"]) * per_batch
            if int(state.get("rank", 0)) == 0 and "generator" in state:
                state = {**state, "drawn": int(state["batches_served"]) * self.batch_size}
        else:
            samples = int(state["samples"])
        if samples % per_batch:
            raise ValueError(
                f"the checkpoint's stream stopped after {samples} samples, not a multiple of "
                f"world size x micro batch = {per_batch}; resume with the same "
                "trainer.global_batch_size"
            )
        self.batches_served = samples // per_batch
        first = self.next_samples().start
        self.generator = torch.Generator().manual_seed(stream_seed(self.seed, 0))
        self.drawn = 0
        if "generator" in state and int(state["drawn"]) <= first:
            self.generator.set_state(state["generator"])
            self.drawn = int(state["drawn"])


def val_block_starts(
    num_tokens: int, block_size: int, *, rank: int = 0, world_size: int = 1
) -> Tensor:
    """This rank's starts of the non-overlapping val blocks, in a fixed shuffled order.

    The block count is cut to a multiple of ``world_size`` so every rank runs the same number of
    batches (collectives in the eval loop stay matched).
    """
    n_blocks = (num_tokens - 1) // block_size
    n_blocks -= n_blocks % world_size
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(VAL_ORDER_SEED))
    return order[rank::world_size] * block_size


def iter_val_blocks(
    path: str | os.PathLike[str],
    *,
    block_size: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One finite pass over this rank's val blocks, ``batch_size`` blocks at a time."""
    tokens = open_tokens(path)
    starts = val_block_starts(len(tokens), block_size, rank=rank, world_size=world_size)
    for i in range(0, len(starts), batch_size):
        yield _blocks_at(tokens, starts[i : i + batch_size], block_size)


def probe_blocks(
    path: str | os.PathLike[str], *, block_size: int, batch_size: int
) -> tuple[Tensor, Tensor]:
    """A fixed batch (the first val blocks of the fixed order), identical on every rank."""
    tokens = open_tokens(path)
    starts = val_block_starts(len(tokens), block_size)[:batch_size]
    if len(starts) == 0:
        raise ValueError(
            f"{path} is too short for one block of {block_size} tokens; lower data.block_size"
        )
    return _blocks_at(tokens, starts, block_size)
