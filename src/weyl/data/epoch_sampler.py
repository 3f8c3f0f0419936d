"""A distributed, epoch-seeded, resumable index sampler for map-style data sets.

Each epoch is one permutation of ``range(size)`` seeded from ``(seed, epoch)`` — identical on
every rank — cut to a multiple of ``world_size`` and dealt round-robin, so the ranks see
disjoint indices within an epoch (the dropped tail differs from epoch to epoch). The sampler
is an infinite iterator that rolls over epochs itself; its position ``(epoch, index)`` is the
whole of its state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from weyl.data.token_blocks import stream_seed


class ShardedEpochSampler:
    """Infinite iterator of ``(epoch, index)`` pairs for one rank."""

    def __init__(
        self, size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}"
            )
        if size < world_size:
            raise ValueError(f"data set of {size} samples cannot be split over {world_size} ranks")
        self.size, self.rank, self.world_size = size, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.index = 0, 0
        self._cached: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        """Samples this rank sees per epoch."""
        return self.size // self.world_size

    def epoch_indices(self, epoch: int) -> Tensor:
        """This rank's indices for ``epoch``, in order."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        if self.shuffle:
            # The rank must not enter the seed: all ranks share one permutation per epoch.
            g = torch.Generator().manual_seed(stream_seed(self.seed, 0, epoch))
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        mine = order[: len(self) * self.world_size][self.rank :: self.world_size]
        self._cached = (epoch, mine)
        return mine

    def __iter__(self) -> ShardedEpochSampler:
        return self

    def __next__(self) -> tuple[int, int]:
        if self.index >= len(self):
            self.epoch, self.index = self.epoch + 1, 0
        pair = (self.epoch, int(self.epoch_indices(self.epoch)[self.index]))
        self.index += 1
        return pair

    def take(self, n: int) -> list[tuple[int, int]]:
        """The next ``n`` ``(epoch, index)`` pairs (possibly spanning an epoch boundary)."""
        return [next(self) for _ in range(n)]

    def clone(self) -> ShardedEpochSampler:
        """An independent sampler at the same position."""
        other = ShardedEpochSampler(
            self.size,
            rank=self.rank,
            world_size=self.world_size,
            seed=self.seed,
            shuffle=self.shuffle,
        )
        other.epoch, other.index = self.epoch, self.index
        return other

    def state_dict(self) -> dict[str, Any]:
        """Position and identity: ``epoch``, ``index`` (within this rank's epoch), and the layout."""
        return {
            "epoch": self.epoch,
            "index": self.index,
            "seed": self.seed,
            "size": self.size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position; a changed world size maps it to the same global progress."""
        if int(state["size"]) != self.size:
            raise ValueError(
                f"checkpointed sampler covered {state['size']} samples, this data set has {self.size}: "
                "the data set changed since the checkpoint"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        old_world = int(state["world_size"])
        if old_world != self.world_size:
            # All ranks deal one permutation round-robin, so after `index` samples per rank the
            # first index·W of it are consumed at any W: the same global position continues
            # exactly (when divisible; the epoch's dropped tail, size mod W, differs by W).
            self.index = min(self.index * old_world // self.world_size, len(self))
