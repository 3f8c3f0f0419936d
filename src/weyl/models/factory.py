"""``build_model``: a typed model config in, a ready ``nn.Module`` out (no Hydra, no globals)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from weyl.config.schema import (
    FlattenSwinModelConfig,
    GPTModelConfig,
    SwinModelConfig,
    ViTModelConfig,
)
from weyl.models.flatten_swin import build_flatten_swin
from weyl.models.gpt import GPT
from weyl.models.presets import ModelConfig
from weyl.models.sigma_reparam import apply_sigma_reparam
from weyl.models.swin import build_swin
from weyl.models.vit import build_vit

_BUILDERS: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    "gpt": (GPTModelConfig, GPT),
    "vit": (ViTModelConfig, build_vit),
    "swin": (SwinModelConfig, build_swin),
    "flatten_swin": (FlattenSwinModelConfig, build_flatten_swin),
}
MODEL_FAMILIES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model of ``cfg.family``; apply σReparam when ``cfg.sigma_reparam``.

    Build under ``with torch.device("meta"):`` to count parameters without memory.
    """
    family = getattr(cfg, "family", None)
    if family not in _BUILDERS:
        raise ValueError(
            f"model.family={family!r} is not supported: use one of {', '.join(MODEL_FAMILIES)}"
        )
    schema, builder = _BUILDERS[family]
    if not isinstance(cfg, schema):
        raise ValueError(
            f"model.family={family!r} needs a {schema.__name__}, got {type(cfg).__name__}"
        )
    if cfg.sigma_reparam_pure and not cfg.sigma_reparam:
        raise ValueError("model.sigma_reparam_pure=true needs model.sigma_reparam=true as well")
    model = builder(cfg)
    if cfg.sigma_reparam:
        apply_sigma_reparam(model, pure=cfg.sigma_reparam_pure)
    return model
