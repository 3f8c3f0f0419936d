"""Spectral and attention diagnostics of the crash mechanism (§3 of the paper).

Everything reads models through :mod:`weyl.models.attention_view`, never a model class.

- :class:`Diagnostics` / :func:`spectral_report` — the flat metric dict a run logs
  (key names documented in :mod:`weyl.diagnostics.monitor`);
- :mod:`~weyl.diagnostics.spectral` — σ(W_qᵀW_k), σ(W_oW_v), SEC without forming products;
- :mod:`~weyl.diagnostics.attention_maps` — attention entropy and effective rank;
- :mod:`~weyl.diagnostics.terms` — the 15 terms of Fig. 1;
- :mod:`~weyl.diagnostics.collapse` — normal / benign / malignant classification;
- :mod:`~weyl.diagnostics.optimizer_view` — scheduled vs effective LR per layer (Fig. 15);
- :mod:`~weyl.diagnostics.modes` — Appendix G's three attention modes (``weyl modes``).
"""

from weyl.diagnostics.attention_maps import attention_entropy, effective_rank
from weyl.diagnostics.collapse import AttentionMode, CollapseThresholds, classify_heads
from weyl.diagnostics.modes import ModeResult, simulate_attention_modes
from weyl.diagnostics.monitor import Diagnostics, spectral_report
from weyl.diagnostics.optimizer_view import layer_lr_stats, parameter_layers
from weyl.diagnostics.spectral import (
    ov_singular_values,
    product_singular_values,
    product_spectral_norm,
    qk_singular_values,
    sec_index,
    spectral_norm,
)
from weyl.diagnostics.terms import weight_terms

__all__ = [
    "AttentionMode",
    "CollapseThresholds",
    "Diagnostics",
    "ModeResult",
    "attention_entropy",
    "classify_heads",
    "effective_rank",
    "layer_lr_stats",
    "ov_singular_values",
    "parameter_layers",
    "product_singular_values",
    "product_spectral_norm",
    "qk_singular_values",
    "sec_index",
    "simulate_attention_modes",
    "spectral_norm",
    "spectral_report",
    "weight_terms",
]
