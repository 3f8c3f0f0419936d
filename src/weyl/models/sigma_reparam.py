"""σReparam (Zhai et al. 2023) as a model transform.

Every ``nn.Linear`` (and every ``nn.Conv2d``, which covers the patch embedding) is replaced by
a layer whose forward uses Ŵ = (γ / σ(W)) · W, where σ(W) is the spectral norm estimated by
one power-iteration step per *training* forward (u, v are buffers, initialised from the SVD
of W₀) and γ is a learned scalar (a 1-element vector) initialised to σ(W₀), so Ŵ₀ = W₀. σ is computed in fp32
even under autocast. The "pure" variant also replaces every ``nn.LayerNorm`` by identity.

Coverage: a Linear whose weight is tied to an embedding table (GPT's ``lm_head``) and a
depthwise convolution (Flatten's rank-restoration conv) stay plain layers.

Starting weights (``init``): ``"keep"`` reuses the model's weights, so the network computes
the same function as before the transform; ``"official"`` redraws them as ml-sigma-reparam's
``convert_to_sn`` does when it swaps in fresh layers: weight ~ ``trunc_normal_(std=0.02)``
with torch's default bounds ±2 (absolute, i.e. ±100 std: in effect untruncated), bias
~ U(±1/√fan_in) as a fresh ``nn.Linear`` draws it (fan_in = in·kh·kw for a conv), γ = σ₁ of
the new weight. That is ``convert_to_sn``'s default gain of 1 for both layer kinds (its ViT-L
example passes ``conv_init_gain=0.125`` for the patch embedding; not offered here).

The replacement layers subclass ``nn.Linear`` / ``nn.Conv2d`` and keep the original
``weight`` and ``bias`` Parameters (same objects, same names; ``"official"`` overwrites their
values in place), so state-dict keys, the fused qkv layout and parameter-group rules are
unchanged; ``effective_weight(module)`` gives the weight the forward actually uses, for
attention views and diagnostics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ml-sigma-reparam's SNLinear: trunc_normal_(std=0.02 · init_multiplier), torch's default a, b.
OFFICIAL_WEIGHT_STD = 0.02
OFFICIAL_TRUNC_BOUND = 2.0
INITS = ("keep", "official")


def _power_iteration_init(w2d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(u, v, σ) of the leading singular triple of a 2-D fp32 matrix, from its SVD."""
    if w2d.is_meta:
        out, inp = w2d.shape
        empty = torch.empty((), device="meta")
        return torch.empty(out, device="meta"), torch.empty(inp, device="meta"), empty
    u_mat, s, vh = torch.linalg.svd(w2d.detach().float(), full_matrices=False)
    return u_mat[:, 0].contiguous(), vh[0].contiguous(), s[0]


@torch.no_grad()
def _redraw_official(weight: Tensor, bias: Tensor | None) -> None:
    """Overwrite ``weight`` and ``bias`` in place with ``convert_to_sn``'s fresh-layer draw."""
    if weight.is_meta:
        return
    nn.init.trunc_normal_(
        weight, std=OFFICIAL_WEIGHT_STD, a=-OFFICIAL_TRUNC_BOUND, b=OFFICIAL_TRUNC_BOUND
    )
    if bias is not None:
        # The official conv is a Linear over the flattened kernel: its fan_in counts every tap.
        bound = 1.0 / math.sqrt(weight[0].numel()) if weight[0].numel() > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound)


class _SigmaReparamMixin:
    """Shared σ estimation for the Linear and Conv2d variants."""

    weight: Tensor
    sigma_u: Tensor
    sigma_v: Tensor
    gamma: nn.Parameter
    training: bool

    def _init_sigma(self) -> None:
        w2d = self.weight.detach().reshape(self.weight.shape[0], -1)
        u, v, s = _power_iteration_init(w2d)
        self.register_buffer("sigma_u", u)  # type: ignore[attr-defined]
        self.register_buffer("sigma_v", v)  # type: ignore[attr-defined]
        # Shape (1,), not a 0-d scalar: FSDP2's fully_shard refuses scalar parameters.
        self.gamma = nn.Parameter(s.reshape(1).to(self.weight.dtype).clone())

    def sigma(self) -> Tensor:
        """σ(W) = uᵀ W v in fp32; in training mode u, v first take one power-iteration step."""
        w = self.weight.reshape(self.weight.shape[0], -1)
        with torch.autocast(device_type=w.device.type, enabled=False):
            w32 = w.float()
            u, v = self.sigma_u, self.sigma_v
            if self.training:
                with torch.no_grad():
                    v = F.normalize(w32.detach().t() @ u, dim=0)
                    u = F.normalize(w32.detach() @ v, dim=0)
                    self.sigma_u.copy_(u)
                    self.sigma_v.copy_(v)
                # Fresh tensors in the graph: the buffers are overwritten in place next step.
                u, v = u.clone(), v.clone()
            return torch.dot(u, w32 @ v)

    def effective_weight(self) -> Tensor:
        """Ŵ = (γ / σ) · W as used by the forward pass (no power-iteration step)."""
        w = self.weight.reshape(self.weight.shape[0], -1)
        with torch.autocast(device_type=w.device.type, enabled=False):
            s = torch.dot(self.sigma_u, w.float() @ self.sigma_v)
            return self.weight * (self.gamma.float() / s).to(self.weight.dtype)

    def _reparam_weight(self) -> Tensor:
        scale = self.gamma.float() / self.sigma()
        return self.weight * scale.to(self.weight.dtype)


class SigmaReparamLinear(_SigmaReparamMixin, nn.Linear):
    """``nn.Linear`` whose forward uses (γ/σ(W))·W."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, init: str = "keep") -> SigmaReparamLinear:
        """Wrap ``linear``, reusing its weight and bias Parameters (redrawn if ``init="official"``)."""
        new = cls(linear.in_features, linear.out_features, bias=False, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        if _check_init(init) == "official":
            _redraw_official(new.weight, new.bias)
        new._init_sigma()
        return new

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self._reparam_weight(), self.bias)


class SigmaReparamConv2d(_SigmaReparamMixin, nn.Conv2d):
    """``nn.Conv2d`` whose forward uses (γ/σ(W))·W, σ of W reshaped to (out, in·kh·kw)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, init: str = "keep") -> SigmaReparamConv2d:
        """Wrap ``conv``, reusing its weight and bias Parameters (redrawn if ``init="official"``)."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=False,
            padding_mode=conv.padding_mode,
            device="meta",
        )
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        if _check_init(init) == "official":
            _redraw_official(new.weight, new.bias)
        new._init_sigma()
        return new

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self._reparam_weight(), self.bias)


def _check_init(init: str) -> str:
    if init not in INITS:
        raise ValueError(
            f"model.sigma_reparam_init: unknown '{init}'; choose one of: {', '.join(INITS)}"
        )
    return init


def effective_weight(module: nn.Module) -> Tensor:
    """The weight a Linear/Conv2d forward actually uses (σReparam-aware)."""
    if isinstance(module, _SigmaReparamMixin):
        return module.effective_weight()
    return module.weight  # type: ignore[return-value]


def _tied_to_embedding(model: nn.Module) -> set[int]:
    """ids of Linear layers whose weight is shared with an nn.Embedding (weight tying)."""
    embed_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {
        id(m) for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) in embed_weights
    }


def apply_sigma_reparam(model: nn.Module, pure: bool = False, init: str = "keep") -> nn.Module:
    """Reparametrise every Linear and Conv2d of ``model`` in place (and return it).

    Linear layers tied to an embedding table (GPT's ``lm_head``) are left as they are, since
    the table is not a linear layer. Depthwise convolutions (``groups == in_channels > 1``,
    e.g. Flatten's rank-restoration conv) are per-channel filters, not a matrix, and are also
    left alone. ``pure=True`` additionally replaces every ``nn.LayerNorm`` by ``nn.Identity``;
    ``init`` is ``"keep"`` or ``"official"`` (module docstring).
    """
    _check_init(init)
    tied = _tied_to_embedding(model)
    replacements: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, _SigmaReparamMixin):
                continue
            if isinstance(child, nn.Linear) and id(child) not in tied:
                replacements.append((parent, name, SigmaReparamLinear.from_linear(child, init)))
            elif isinstance(child, nn.Conv2d) and not (
                child.groups > 1 and child.groups == child.in_channels
            ):
                replacements.append((parent, name, SigmaReparamConv2d.from_conv(child, init)))
            elif pure and isinstance(child, nn.LayerNorm):
                replacements.append((parent, name, nn.Identity()))
    for parent, name, new in replacements:
        setattr(parent, name, new)
    return model
