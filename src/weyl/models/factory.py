"""``build_model``: a model config in, a ready ``nn.Module`` out (no Hydra, no globals)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from weyl.models.flatten_swin import build_flatten_swin
from weyl.models.gpt import GPT
from weyl.models.model_config import ModelConfig
from weyl.models.sigma_reparam import apply_sigma_reparam
from weyl.models.swin import build_swin
from weyl.models.vit import build_vit

# family → builder; the family's config dataclass is weyl.models.model_config.MODEL_CONFIGS[family].
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "gpt": GPT,
    "vit": build_vit,
    "swin": build_swin,
    "flatten_swin": build_flatten_swin,
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model of ``cfg.family``; apply σReparam when ``cfg.sigma_reparam``.

    The config checked its values when it was created. Build under ``with torch.device("meta"):``
    to count parameters without memory.
    """
    if cfg.family not in BUILDERS:
        raise ValueError(f"model.family: no builder for '{cfg.family}'; have {', '.join(BUILDERS)}")
    model = BUILDERS[cfg.family](cfg)
    if cfg.sigma_reparam:
        apply_sigma_reparam(model, pure=cfg.sigma_reparam_pure, init=cfg.sigma_reparam_init)
    return model
