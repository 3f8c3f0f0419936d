"""The attention view: the one interface through which diagnostics read any model family.

Every family (our GPT, timm ViT, timm Swin, Flatten-Swin, and σReparam-wrapped versions of
them) exposes its attention layers as a list of :class:`AttentionLayerView`. Diagnostics
never touch a model class; adding a family means registering a view builder here.

Conventions (paper notation, W_q ∈ R^{d_q×d} so that q = W_q x):
- ``q_weight()`` / ``k_weight()`` / ``v_weight()`` return ``(H, d_q, d)``: head h's rows of the
  projection (a view into a fused qkv weight where the model fuses them).
- ``o_weight()`` returns ``(H, d, d_q)``: the columns of the output projection that consume
  head h, so that the layer output is Σ_h Wo_h · (attention_h · V_h).
- ``mlp_w1()`` is ``(hidden, d)`` and ``mlp_w2()`` is ``(d, hidden)`` (``None`` when the block
  has no MLP); ``norm1`` / ``norm2`` are the block's two norm modules (``None`` when absent).
- Weights are the *effective* weights the forward pass uses (σReparam's γ/σ·W, not the raw W).
- ``enable_capture(sink)`` makes the next forward passes append the attention probabilities
  of this layer to ``sink`` as ``(batch·windows, H, N_q, N_k)`` fp32 tensors and returns a
  function that undoes it. Masked (causal) entries are exact zeros.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

WeightFn = Callable[[], Tensor]
OptionalWeightFn = Callable[[], Tensor | None]
CaptureFn = Callable[[list[Tensor]], Callable[[], None]]


@dataclass
class AttentionLayerView:
    """One attention layer and its residual block, as seen by diagnostics."""

    index: int
    path: str
    num_heads: int
    head_dim: int
    dim: int
    block: nn.Module
    attention: nn.Module
    q_weight: WeightFn
    k_weight: WeightFn
    v_weight: WeightFn
    o_weight: WeightFn
    mlp_w1: OptionalWeightFn
    mlp_w2: OptionalWeightFn
    norm1: nn.Module | None
    norm2: nn.Module | None
    enable_capture: CaptureFn
    causal: bool = False
    kind: str = "softmax"  # "softmax", "window_softmax" or "linear" (Flatten's implicit map)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Stable short name used in metric keys, e.g. ``L03``."""
        return f"L{self.index:02d}"


ViewBuilder = Callable[[nn.Module], list[AttentionLayerView]]
_BUILDERS: list[tuple[Callable[[nn.Module], bool], ViewBuilder]] = []


def register_view(matches: Callable[[nn.Module], bool], builder: ViewBuilder) -> None:
    """Register a view builder for models for which ``matches(model)`` is true."""
    _BUILDERS.append((matches, builder))


def _find_view(model: nn.Module) -> tuple[nn.Module, Callable[[], list[AttentionLayerView]]]:
    """The outermost module of ``model`` with a view, and the call that builds the view."""
    from weyl.models import swin, vit  # noqa: F401 - timm's views register on import (lazy package)

    for module in model.modules():
        own = getattr(module, "attention_views", None)
        if callable(own):
            # torch.compile's wrapper forwards attribute reads to the model it wraps.
            return getattr(own, "__self__", module), own
        for matches, builder in _BUILDERS:
            if matches(module):
                return module, functools.partial(builder, module)
    raise TypeError(
        f"no attention view for {type(model).__name__}: implement `attention_views()` on the "
        "model or register a builder with weyl.models.attention_view.register_view"
    )


def viewed_model(model: nn.Module) -> nn.Module:
    """The module the views describe: ``model``, or the outermost submodule with a view.

    A wrapper (DDP's ``.module``, ``torch.compile``'s ``._orig_mod``) is so seen through
    without the view knowing any wrapper.
    """
    return _find_view(model)[0]


def attention_views(model: nn.Module) -> list[AttentionLayerView]:
    """Return the attention layers of any supported model, in depth order."""
    return _find_view(model)[1]()


@contextlib.contextmanager
def capture_attention(
    views: list[AttentionLayerView],
) -> Iterator[dict[str, list[Tensor]]]:
    """Within the block, forward passes record attention probabilities per layer name."""
    sinks: dict[str, list[Tensor]] = {v.name: [] for v in views}
    undo = [v.enable_capture(sinks[v.name]) for v in views]
    try:
        yield sinks
    finally:
        for u in reversed(undo):
            u()


def capture_via_attn_drop(attention: nn.Module) -> CaptureFn:
    """Capture for timm-style attention modules (timm ViT/Swin and our GPT).

    Such modules compute ``softmax`` explicitly when ``fused_attn`` is false and pass the
    probabilities through ``attn_drop``; we turn fusion off and read ``attn_drop``'s input.
    """

    def enable(sink: list[Tensor]) -> Callable[[], None]:
        had_fused = getattr(attention, "fused_attn", False)
        attention.fused_attn = False

        def hook(_mod: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            sink.append(inputs[0].detach().float())

        handle = attention.attn_drop.register_forward_pre_hook(hook)

        def undo() -> None:
            handle.remove()
            attention.fused_attn = had_fused

        return undo

    return enable


def split_rows_per_head(weight: Tensor, num_heads: int) -> Tensor:
    """(H·d_q, d) → (H, d_q, d) as a view."""
    out, d = weight.shape
    return weight.view(num_heads, out // num_heads, d)


def split_cols_per_head(weight: Tensor, num_heads: int) -> Tensor:
    """(d, H·d_q) → (H, d, d_q): the input columns of an output projection per head."""
    d, inner = weight.shape
    return weight.view(d, num_heads, inner // num_heads).permute(1, 0, 2)


def fused_qkv_views(qkv_weight: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split a fused (3·H·d_q, d) qkv weight (q rows, then k, then v) into three (H, d_q, d) views."""
    q, k, v = qkv_weight.chunk(3, dim=0)
    return (
        split_rows_per_head(q, num_heads),
        split_rows_per_head(k, num_heads),
        split_rows_per_head(v, num_heads),
    )


@torch.no_grad()
def probe_attention(
    model: nn.Module, batch: Tensor, views: list[AttentionLayerView] | None = None
) -> dict[str, Tensor]:
    """Run one forward pass on ``batch`` in eval mode and return each layer's attention maps."""
    views = views if views is not None else attention_views(model)
    was_training = model.training
    model.eval()
    try:
        with capture_attention(views) as sinks:
            model(batch)
    finally:
        model.train(was_training)
    return {name: torch.cat(maps, dim=0) for name, maps in sinks.items() if maps}
