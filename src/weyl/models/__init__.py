"""The paper's models (GPT-2, timm ViT/Swin, Flatten-Swin), σReparam and the attention view.

Importing this package registers the attention-view builders and the Transformer-block lists
(:mod:`weyl.models.transformer_blocks`) of every family.
"""

from weyl.models.attention_view import (
    AttentionLayerView,
    attention_views,
    capture_attention,
    probe_attention,
    viewed_model,
)
from weyl.models.factory import MODEL_FAMILIES, build_model
from weyl.models.flatten_attention import FocusedLinearAttention
from weyl.models.flatten_swin import build_flatten_swin
from weyl.models.gpt import GPT
from weyl.models.presets import PRESET_NAMES, named_config
from weyl.models.sigma_reparam import (
    SigmaReparamConv2d,
    SigmaReparamLinear,
    apply_sigma_reparam,
    effective_weight,
)
from weyl.models.swin import build_swin
from weyl.models.vit import build_vit

__all__ = [
    "GPT",
    "MODEL_FAMILIES",
    "PRESET_NAMES",
    "AttentionLayerView",
    "FocusedLinearAttention",
    "SigmaReparamConv2d",
    "SigmaReparamLinear",
    "apply_sigma_reparam",
    "attention_views",
    "build_flatten_swin",
    "build_model",
    "build_swin",
    "build_vit",
    "capture_attention",
    "effective_weight",
    "named_config",
    "probe_attention",
    "viewed_model",
]
