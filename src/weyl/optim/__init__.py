"""Optimizers: AdamW² (Algorithm 1), the reusable Weyl clip, σ₁ estimation, param groups."""

from weyl.optim.adamw2 import AdamW2
from weyl.optim.param_groups import (
    OPTIMIZER_NAMES,
    build_optimizer,
    no_weight_decay_names,
    param_groups,
)
from weyl.optim.sgdw2 import SGDW2
from weyl.optim.spectral_norm import (
    ShardLayout,
    as_matrix,
    initial_vector,
    matrix_shape,
    shard_layout,
    spectral_norm,
    spectral_norm_estimates,
)
from weyl.optim.weyl_clip import (
    DEFAULT_SIGMA_FLOOR,
    DEFAULT_TAU,
    SpectrallyClippedOptimizer,
    WeylClip,
    clip_off,
    clip_rule,
)

__all__ = [
    "DEFAULT_SIGMA_FLOOR",
    "DEFAULT_TAU",
    "OPTIMIZER_NAMES",
    "SGDW2",
    "AdamW2",
    "ShardLayout",
    "SpectrallyClippedOptimizer",
    "WeylClip",
    "as_matrix",
    "build_optimizer",
    "clip_off",
    "clip_rule",
    "initial_vector",
    "matrix_shape",
    "no_weight_decay_names",
    "param_groups",
    "shard_layout",
    "spectral_norm",
    "spectral_norm_estimates",
]
