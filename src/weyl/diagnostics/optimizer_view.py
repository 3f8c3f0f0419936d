"""The optimizer's view (Fig. 15): scheduled vs effective learning rate and clip rate per layer.

AdamW² records, per parameter name, the scheduled LR, the LR it actually applied after the
spectral clip of Algorithm 1 (lines 7–8) and whether the clip fired:

    optimizer.lr_report() -> {param_name: {"lr": float, "lr_eff": float, "clipped": 0/1}}

:func:`layer_lr_stats` maps those names onto attention layers (a parameter belongs to layer
``Lxx`` when it lives in that view's ``block``) and averages per layer. Parameters outside
every block (embeddings, final norm, head) are aggregated under ``other``. Optimizers
without ``lr_report`` give an empty dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from statistics import fmean

from torch import nn

from weyl.models.attention_view import AttentionLayerView, viewed_model

# Wrapper prefixes that the optimizer's names may carry and the unwrapped model's do not.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
REQUIRED_FIELDS = ("lr", "lr_eff", "clipped")


def _canonical(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix) :], True
    return name.replace("._orig_mod.", ".")


def parameter_layers(model: nn.Module, views: list[AttentionLayerView]) -> dict[str, str]:
    """Map each parameter name of ``model`` (wrappers stripped) to its layer name or ``other``."""
    inner = viewed_model(model)
    module_paths = {id(m): path for path, m in inner.named_modules()}
    owner: dict[str, str] = {}
    for view in views:
        block_path = module_paths.get(id(view.block))
        if block_path is None:
            raise ValueError(
                f"attention view {view.name} ({view.path}) has a block that is not a submodule "
                "of the model; its view builder must return the model's own modules"
            )
        prefix = f"{block_path}." if block_path else ""
        for name, _ in view.block.named_parameters():
            owner[_canonical(prefix + name)] = view.name
    return {
        _canonical(name): owner.get(_canonical(name), "other")
        for name, _ in inner.named_parameters()
    }


def layer_lr_stats(
    model: nn.Module, optimizer: object, views: list[AttentionLayerView]
) -> dict[str, float]:
    """Per-layer ``lr/Lxx/{scheduled_mean, effective_mean, effective_min, clip_rate}`` (+ overall).

    Empty when ``optimizer`` has no ``lr_report`` or the report is empty.
    """
    report_fn = getattr(optimizer, "lr_report", None)
    if not callable(report_fn):
        return {}
    report = report_fn()
    if not report:
        return {}
    layers = parameter_layers(model, views)
    grouped: dict[str, list[dict[str, float]]] = {}
    for name, record in report.items():
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            raise ValueError(
                f"optimizer.lr_report()[{name!r}] lacks {missing}; each entry needs "
                f"{list(REQUIRED_FIELDS)}"
            )
        layer = layers.get(_canonical(name), "other")
        grouped.setdefault(layer, []).append(record)
    out: dict[str, float] = {}
    everything = [r for records in grouped.values() for r in records]
    for layer, records in [*sorted(grouped.items()), ("all", everything)]:
        key = "lr" if layer == "all" else f"lr/{layer}"
        out.update({f"{key}/{k}": v for k, v in lr_summary(records).items()})
    return out


def lr_summary(records: Iterable[dict[str, float]]) -> dict[str, float]:
    """``scheduled_mean``, ``effective_mean``, ``effective_min``, ``clip_rate`` of lr_report rows."""
    rows = list(records)
    effective = [float(r["lr_eff"]) for r in rows]
    return {
        "scheduled_mean": fmean(float(r["lr"]) for r in rows),
        "effective_mean": fmean(effective),
        "effective_min": min(effective),
        "clip_rate": fmean(float(r["clipped"]) for r in rows),
    }
