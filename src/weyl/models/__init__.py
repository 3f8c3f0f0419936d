"""The paper's models (GPT-2, timm ViT/Swin, Flatten-Swin), σReparam and the attention view.

The attention-view builders and Transformer-block lists (:mod:`weyl.models.transformer_blocks`)
of timm's families register when their modules load: on :func:`build_model`, or on the first
lookup. Names load on first use (:mod:`weyl.lazy_exports`): ``weyl.models.model_config`` stays
light.
"""

from weyl.lazy_exports import lazy_exports

_EXPORTS = {
    "AttentionLayerView": "weyl.models.attention_view",
    "attention_views": "weyl.models.attention_view",
    "capture_attention": "weyl.models.attention_view",
    "probe_attention": "weyl.models.attention_view",
    "viewed_model": "weyl.models.attention_view",
    "MODEL_CONFIGS": "weyl.models.model_config",
    "BUILDERS": "weyl.models.factory",
    "build_model": "weyl.models.factory",
    "FocusedLinearAttention": "weyl.models.flatten_attention",
    "build_flatten_swin": "weyl.models.flatten_swin",
    "GPT": "weyl.models.gpt",
    "SigmaReparamConv2d": "weyl.models.sigma_reparam",
    "SigmaReparamLinear": "weyl.models.sigma_reparam",
    "apply_sigma_reparam": "weyl.models.sigma_reparam",
    "effective_weight": "weyl.models.sigma_reparam",
    "build_swin": "weyl.models.swin",
    "build_vit": "weyl.models.vit",
}
__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
