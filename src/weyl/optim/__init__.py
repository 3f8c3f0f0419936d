"""Optimizers: AdamW² (Algorithm 1), the reusable Weyl clip, σ₁ estimation, param groups,
and the other stabilizers (GI-Adam, StableAdamW, Muon + AdamW; RAdam is torch's).

Names load on first use (:mod:`weyl.lazy_exports`): ``weyl.optim.optim_config`` stays light.
"""

from weyl.lazy_exports import lazy_exports

_EXPORTS = {
    "AdamW2": "weyl.optim.adamw2",
    "GIAdam": "weyl.optim.gi_adam",
    "MuonWithAdamW": "weyl.optim.muon_adamw",
    "OptimConfig": "weyl.optim.optim_config",
    "MuonLRAdjust": "weyl.optim.optim_config",
    "OptimizerName": "weyl.optim.optim_config",
    "build_optimizer": "weyl.optim.param_groups",
    "no_weight_decay_names": "weyl.optim.param_groups",
    "param_groups": "weyl.optim.param_groups",
    "SGDW2": "weyl.optim.sgdw2",
    "ShardLayout": "weyl.optim.spectral_norm",
    "as_matrix": "weyl.optim.spectral_norm",
    "initial_vector": "weyl.optim.spectral_norm",
    "matrix_shape": "weyl.optim.spectral_norm",
    "shard_layout": "weyl.optim.spectral_norm",
    "spectral_norm": "weyl.optim.spectral_norm",
    "spectral_norm_estimates": "weyl.optim.spectral_norm",
    "DEFAULT_SIGMA_FLOOR": "weyl.optim.weyl_clip",
    "DEFAULT_TAU": "weyl.optim.weyl_clip",
    "SpectrallyClippedOptimizer": "weyl.optim.weyl_clip",
    "WeylClip": "weyl.optim.weyl_clip",
    "clip_off": "weyl.optim.weyl_clip",
    "clip_rule": "weyl.optim.weyl_clip",
}
__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
