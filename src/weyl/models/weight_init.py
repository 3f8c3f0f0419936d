"""Weight initialisations named in the paper's Table 2 ("Xavier", "Truncated Xavier").

Definitions used here (the paper does not spell them out):

- ``xavier``: Glorot-uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
- ``trunc_xavier``: Glorot with a truncated normal, i.e. JAX's
  ``variance_scaling(1.0, "fan_avg", "truncated_normal")``: N(0, s²) truncated to ±2s with
  s = sqrt(2 / (fan_in + fan_out)) / 0.8796…, the divisor restoring the variance the
  truncation removes, so both schemes give Var = 2 / (fan_in + fan_out).

A fused qkv projection is initialised as three separate (H·d_q, d) matrices, as the
unfused Transformer of the original papers would be, not as one (3·H·d_q, d) matrix.
Biases are zeroed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from weyl.models.model_config import GPTInit

# The inits of GPTInit / VisionInit that this module implements (the others are the models').
XAVIER_INITS = (GPTInit.xavier.value, GPTInit.trunc_xavier.value)
# Std of a unit normal truncated to [-2, 2]; dividing by it keeps the untruncated variance.
_TRUNC_STD_2SIGMA = 0.87962566103423978


@torch.no_grad()
def xavier_(weight: Tensor, scheme: str) -> Tensor:
    """Fill a 2-D ``weight`` in place with the named Glorot scheme and return it."""
    if weight.dim() != 2:
        raise ValueError(f"xavier_ expects a 2-D weight, got shape {tuple(weight.shape)}")
    fan_out, fan_in = weight.shape
    if scheme == "xavier":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return weight.uniform_(-bound, bound)
    if scheme == "trunc_xavier":
        std = math.sqrt(2.0 / (fan_in + fan_out)) / _TRUNC_STD_2SIGMA
        return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
    raise ValueError(f"unknown init {scheme!r}: use one of {XAVIER_INITS}")


@torch.no_grad()
def reinit_linears(model: nn.Module, scheme: str, skip: tuple[nn.Module, ...] = ()) -> None:
    """Re-initialise every ``nn.Linear`` weight of ``model`` with ``scheme``; zero its bias.

    Linear layers named ``qkv`` are initialised per q/k/v chunk. Modules in ``skip`` (e.g. a
    classifier tied to an embedding table) are left alone.
    """
    skip_ids = {id(m) for m in skip}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or id(module) in skip_ids:
            continue
        if name.rsplit(".", 1)[-1] == "qkv" and module.out_features % 3 == 0:
            for chunk in module.weight.chunk(3, dim=0):
                xavier_(chunk, scheme)
        else:
            xavier_(module.weight, scheme)
        if module.bias is not None:
            module.bias.zero_()
