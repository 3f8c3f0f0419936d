"""How the trainer wraps a model (DDP, FSDP2, ``torch.compile``) and reaches the model inside.

FSDP2 shards each Transformer block (the family's own list, :mod:`weyl.models.transformer_blocks`)
and then the root, so a block's parameters are gathered only while it runs.
"""

from __future__ import annotations

import logging

from torch import nn

from weyl.models.transformer_blocks import transformer_blocks
from weyl.train.distributed import DistContext

log = logging.getLogger(__name__)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """Strip a ``torch.compile`` wrapper (keeps DDP, unlike :func:`unwrap_model`)."""
    return getattr(model, "_orig_mod", model)


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """Modules to shard one by one before the root: the model's Transformer blocks."""
    return transformer_blocks(unwrap_model(model))


def wrap_model(model: nn.Module, ctx: DistContext, strategy: str) -> nn.Module:
    """DDP, or FSDP2 ``fully_shard`` per block then the root; identity in a single process."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"trainer.strategy={strategy!r} is unknown; use ddp or fsdp")
    if not ctx.is_distributed:
        if strategy == "fsdp":
            # As torchtitan with a data-parallel degree of 1: nothing to shard, train unwrapped.
            log.warning("trainer.strategy=fsdp in a single process: the model runs unsharded")
        return model
    if strategy == "ddp":
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard

    for unit in fsdp_units(model):
        fully_shard(unit)
    fully_shard(model)
    return model


def is_fsdp(model: nn.Module) -> bool:
    """True when ``model`` was sharded with FSDP2's ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)
