"""Each model family's residual Transformer blocks, in depth order.

The training infrastructure shards these one by one under FSDP2; nothing here depends on the
diagnostics' attention view. A model lists its own with a ``transformer_blocks()`` method (our
GPT); families built from classes we do not own (timm's ViT and Swin, and so Flatten-Swin)
register a function with :func:`register_blocks`, next to their builder.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

BlocksFn = Callable[[nn.Module], list[nn.Module]]
_FAMILIES: list[tuple[Callable[[nn.Module], bool], BlocksFn]] = []


def register_blocks(matches: Callable[[nn.Module], bool], blocks: BlocksFn) -> None:
    """Register how to list the blocks of models for which ``matches(model)`` is true."""
    _FAMILIES.append((matches, blocks))


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The Transformer blocks of ``model`` (an unwrapped model), in depth order."""
    from weyl.models import swin, vit  # noqa: F401 - timm's lists register on import (lazy package)

    own = getattr(model, "transformer_blocks", None)
    if callable(own):
        return list(own())
    for matches, blocks in _FAMILIES:
        if matches(model):
            return blocks(model)
    raise TypeError(
        f"no list of Transformer blocks for {type(model).__name__}: define "
        "`transformer_blocks()` on the model or register one with "
        "weyl.models.transformer_blocks.register_blocks"
    )
