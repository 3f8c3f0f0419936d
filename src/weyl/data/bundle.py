"""The contract between data and trainer: what :func:`weyl.data.factory.build_data` returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor


class BatchStream(Protocol):
    """Infinite iterator of ``(inputs, targets)`` CPU tensors for one rank, exactly resumable."""

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __next__(self) -> tuple[Tensor, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class DataBundle:
    """Everything the trainer needs from a data set, for this rank."""

    # "lm" or "classification"
    task: str
    # Infinite (inputs, targets) stream; handles epochs itself (no set_epoch).
    train: BatchStream
    # A fresh finite pass over this rank's shard of val.
    make_val: Callable[[], Iterable[tuple[Tensor, Tensor]]]
    # A fixed small batch (identical on every rank) for diagnostics.
    probe: tuple[Tensor, Tensor]
    vocab_size: int | None
    num_classes: int | None
    # Mixup/CutMix: (x, int targets) -> (x, soft targets); None when off.
    mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None
    # Used by the trainer when mix is None (when mix is set, smoothing is inside its targets).
    label_smoothing: float
    # Train set size (images) or train tokens // block_size (text).
    samples_per_epoch: int
