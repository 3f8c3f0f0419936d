"""The optimizer's view: scheduled vs actual learning rate per tensor (Fig. 15) and per layer.

AdamW² records, per parameter name, the scheduled LR, the LR it actually applied after the
spectral clip of Algorithm 1 (lines 7–8) and whether the clip fired:

    optimizer.lr_report() -> {param_name: {"lr": float, "lr_eff": float, "clipped": 0/1}}

Two readings of that record:

- :class:`TensorLRView` — Fig. 15 as the paper draws it (Appendix M: the actual LR of γ₁, γ₂,
  W₁, W₂ and the attention weights of chosen blocks, one point every 50 steps). For every
  tensor of the chosen blocks (``diagnostics.lr_layers``)::

      lr/Lxx/<tensor>     the effective LR α_eff the step applied (e.g. lr/L03/attn.qkv.weight)
      clip/Lxx/<tensor>   1.0 where the clip cut α (α·σ̂₁(ΔW)/σ̂₁(W) > τ), else 0.0

  ``<tensor>`` is the parameter's path inside its block; the scheduled LR is the record's
  ``lr``. The trainer logs these every ``diagnostics.lr_every`` steps, from the same single
  ``lr_report()`` read that gives its ``optim/*`` summary on log steps. Volume (measured on GPT-2 L's names): two keys per
  tensor and chosen block; a GPT block has 6 tensors without biases (12 with), so the
  default three blocks add 36 (72) keys, 1.4 KB (2.8 KB) of JSON per logged step whatever
  the depth — 2.9 MB over 100K steps at the default interval of 50; ``lr_layers=[all]`` on
  GPT-2 L's 36 blocks is 432 (864) keys, 17 KB (34 KB) per logged step.
- :func:`layer_lr_stats` — per-layer means (a parameter belongs to layer ``Lxx`` when it lives
  in that view's ``block``; embeddings, final norm and head are aggregated under ``other``),
  logged with the diagnostics every ``diagnostics.every`` steps.

Optimizers without ``lr_report`` give nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

from torch import nn

from weyl.diagnostics.diagnostics_config import select_lr_layers
from weyl.models.attention_view import AttentionLayerView, viewed_model
from weyl.optim.weyl_clip import clip_off

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


def _block_parameters(
    model: nn.Module, views: list[AttentionLayerView]
) -> Iterable[tuple[AttentionLayerView, str, str]]:
    """(view, parameter name inside the block, canonical name in the model) of every view."""
    inner = viewed_model(model)
    module_paths = {id(m): path for path, m in inner.named_modules()}
    for view in views:
        block_path = module_paths.get(id(view.block))
        if block_path is None:
            raise ValueError(
                f"attention view {view.name} ({view.path}) has a block that is not a submodule "
                "of the model; its view builder must return the model's own modules"
            )
        prefix = f"{block_path}." if block_path else ""
        for name, _ in view.block.named_parameters():
            yield view, name, _canonical(prefix + name)


def parameter_layers(model: nn.Module, views: list[AttentionLayerView]) -> dict[str, str]:
    """Map each parameter name of ``model`` (wrappers stripped) to its layer name or ``other``."""
    inner = viewed_model(model)
    owner = {full: view.name for view, _, full in _block_parameters(model, views)}
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
        _check_row(name, record)
        layer = layers.get(_canonical(name), "other")
        grouped.setdefault(layer, []).append(record)
    out: dict[str, float] = {}
    everything = [r for records in grouped.values() for r in records]
    for layer, records in [*sorted(grouped.items()), ("all", everything)]:
        key = "lr" if layer == "all" else f"lr/{layer}"
        out.update({f"{key}/{k}": v for k, v in lr_summary(records).items()})
    return out


def _check_row(name: str, record: dict[str, float]) -> None:
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise ValueError(
            f"optimizer.lr_report()[{name!r}] lacks {missing}; each entry needs "
            f"{list(REQUIRED_FIELDS)}"
        )


def clip_active(optimizer: object) -> bool:
    """Whether ``optimizer`` records clipped LRs and has the clip on in some param group."""
    if not callable(getattr(optimizer, "lr_report", None)):
        return False
    groups: list[dict[str, Any]] = getattr(optimizer, "param_groups", [])
    return any(not clip_off(group.get("tau")) for group in groups)


class TensorLRView:
    """Fig. 15's keys (``lr/Lxx/<tensor>``, ``clip/Lxx/<tensor>``) from an ``lr_report()``.

    The name → key table of the chosen blocks is built once here (walking the module tree
    is the costly part), so a call costs a dict lookup per reported tensor; tensors outside
    the chosen blocks are skipped.
    """

    def __init__(
        self,
        model: nn.Module,
        views: list[AttentionLayerView],
        layers: Sequence[str] = ("first", "middle", "last"),
    ) -> None:
        chosen = set(select_lr_layers([v.name for v in views], layers))
        self.layers = [v.name for v in views if v.name in chosen]
        self._keys: dict[str, tuple[str, str]] = {
            full: (f"lr/{view.name}/{name}", f"clip/{view.name}/{name}")
            for view, name, full in _block_parameters(model, [v for v in views if v.name in chosen])
        }

    def __call__(self, report: dict[str, dict[str, float]]) -> dict[str, float]:
        """The effective LR and clip flag of every reported tensor of the chosen blocks."""
        out: dict[str, float] = {}
        for name, record in report.items():
            keys = self._keys.get(_canonical(name))
            if keys is None:
                continue
            _check_row(name, record)
            out[keys[0]] = float(record["lr_eff"])
            out[keys[1]] = float(record["clipped"])
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
