"""Spectral and attention diagnostics of the crash mechanism (§3 of the paper).

Everything reads models through :mod:`weyl.models.attention_view`, never a model class.

- :class:`Diagnostics` / :func:`spectral_report` — the flat metric dict a run logs
  (key names documented in :mod:`weyl.diagnostics.monitor`);
- :mod:`~weyl.diagnostics.spectral` — σ(W_qᵀW_k), σ(W_oW_v), SEC without forming products;
- :mod:`~weyl.diagnostics.attention_maps` — attention entropy and effective rank;
- :mod:`~weyl.diagnostics.terms` — the 15 terms of Fig. 1;
- :mod:`~weyl.diagnostics.collapse` — normal / benign / malignant classification;
- :mod:`~weyl.diagnostics.optimizer_view` — scheduled vs effective LR per tensor (Fig. 15)
  and per layer; :mod:`~weyl.diagnostics.tensor_kinds` — γ₁, W_qkv, W₂, … from a tensor's name;
- :mod:`~weyl.diagnostics.modes` — Appendix G's three attention modes (``weyl modes``).

Names load on first use (:mod:`weyl.lazy_exports`): ``weyl.diagnostics.diagnostics_config``
stays light.
"""

from weyl.lazy_exports import lazy_exports

_EXPORTS = {
    "attention_entropy": "weyl.diagnostics.attention_maps",
    "effective_rank": "weyl.diagnostics.attention_maps",
    "AttentionMode": "weyl.diagnostics.collapse",
    "CollapseThresholds": "weyl.diagnostics.collapse",
    "classify_heads": "weyl.diagnostics.collapse",
    "theorem1_holds": "weyl.diagnostics.collapse",
    "DiagnosticsConfig": "weyl.diagnostics.diagnostics_config",
    "ModeResult": "weyl.diagnostics.modes",
    "simulate_attention_modes": "weyl.diagnostics.modes",
    "Diagnostics": "weyl.diagnostics.monitor",
    "spectral_report": "weyl.diagnostics.monitor",
    "layer_lr_stats": "weyl.diagnostics.optimizer_view",
    "parameter_layers": "weyl.diagnostics.optimizer_view",
    "TensorLRView": "weyl.diagnostics.optimizer_view",
    "tensor_kind": "weyl.diagnostics.tensor_kinds",
    "ov_singular_values": "weyl.diagnostics.spectral",
    "product_singular_values": "weyl.diagnostics.spectral",
    "product_spectral_norm": "weyl.diagnostics.spectral",
    "qk_singular_values": "weyl.diagnostics.spectral",
    "sec_index": "weyl.diagnostics.spectral",
    "spectral_norm": "weyl.diagnostics.spectral",
    "weight_terms": "weyl.diagnostics.terms",
}
__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
