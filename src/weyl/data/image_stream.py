"""Batches of augmented images for one rank: the infinite training stream and the val pass.

The training stream plans batches from a clone of its sampler and feeds the plan to a
``DataLoader`` (so ``num_workers`` can prefetch), while its own sampler advances only by the
batches actually handed out. Its ``state_dict`` (sampler position + mixup RNG) therefore
describes exactly what the trainer consumed, whatever the workers had prefetched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from weyl.data.epoch_sampler import ShardedEpochSampler
from weyl.data.image_transforms import SeededMixup, SeededTransformDataset


class _BatchPlan:
    """Infinite iterable of index lists, read from a private copy of a sampler."""

    def __init__(self, sampler: ShardedEpochSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler.clone(), batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        while True:
            yield self.sampler.take(self.batch_size)


class ImageBatchStream:
    """Infinite iterator of ``(images (B, C, H, W) float, labels (B,) int64)`` for one rank."""

    def __init__(
        self,
        dataset: SeededTransformDataset,
        sampler: ShardedEpochSampler,
        *,
        batch_size: int,
        num_workers: int = 0,
        mixer: SeededMixup | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.num_workers, self.mixer = batch_size, num_workers, mixer
        self._batches: Iterator[Any] | None = None

    def _loader(self) -> Iterator[Any]:
        loader = DataLoader(
            self.dataset,
            batch_sampler=_BatchPlan(self.sampler, self.batch_size),
            num_workers=self.num_workers,
            persistent_workers=False,
            # Page-locked batches let the trainer's non_blocking .to(cuda) overlap the copy.
            pin_memory=torch.cuda.is_available(),
        )
        return iter(loader)

    def __iter__(self) -> ImageBatchStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._batches is None:
            self._batches = self._loader()
        images, labels = next(self._batches)
        self.sampler.take(self.batch_size)
        return images, labels.long()

    @property
    def epoch(self) -> int:
        """The epoch the next sample comes from."""
        return (
            self.sampler.epoch if self.sampler.index < len(self.sampler) else self.sampler.epoch + 1
        )

    def state_dict(self) -> dict[str, Any]:
        """Sampler position ``(epoch, index)`` and the mixup RNG state."""
        return {
            "sampler": self.sampler.state_dict(),
            "mix": self.mixer.state_dict() if self.mixer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; prefetched batches from the old position are dropped.

        At another world size the sampler maps the epoch position (see
        :class:`ShardedEpochSampler`) and the mixup RNG keeps its fresh per-rank seed: its draws
        are per batch, and batches hold other samples at another world size.
        """
        same_world = int(state["sampler"]["world_size"]) == self.sampler.world_size
        self.sampler.load_state_dict(state["sampler"])
        if self.mixer is not None and state.get("mix") is not None and same_world:
            self.mixer.load_state_dict(state["mix"])
        self._batches = None


def val_indices(size: int, *, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's val indices: strided, the tail cut so every rank gets as many."""
    usable = size - size % world_size
    return list(range(rank, usable, world_size))


def iter_val_images(
    dataset: SeededTransformDataset,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One finite pass over this rank's share of val (eval transform, no mixing)."""
    indices = val_indices(len(dataset), rank=rank, world_size=world_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=num_workers)
    for images, labels in loader:
        yield images, labels.long()


def probe_images(dataset: SeededTransformDataset, batch_size: int) -> tuple[Tensor, Tensor]:
    """The first ``batch_size`` val samples (eval transform): the same fixed batch on every rank."""
    n = min(batch_size, len(dataset))
    items = [dataset[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)
