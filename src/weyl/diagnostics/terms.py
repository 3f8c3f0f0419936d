"""The 15 training-dynamics terms of Fig. 1 (Eq. 1), per block.

Weight terms (layer-level matrices, all heads together as in Fig. 1: W_q is the full
(H·d_q, d) projection, W_o the full (d, H·d_q) one):

    wq_sigma1, wk_sigma1, wv_sigma1, wo_sigma1   σ₁ of W_q, W_k, W_v, W_o
    w1_sigma1, w2_sigma1                         σ₁ of the MLP's W_1 (hidden, d), W_2 (d, hidden)
    gamma1_norm, beta1_norm, gamma2_norm, beta2_norm   ‖·‖₂ of the two norms' affine parameters
    qk_sigma1, ov_sigma1, ffn_sigma1             σ₁ of W_qᵀW_k, W_oW_v, W_2W_1

Activation terms, measured on the block's input X (B, N, d) on a probe forward:

    x_norm        root-mean-square token norm √(mean_t ‖x_t‖²) (independent of batch size)
    grad_x_norm   ‖∂L/∂X‖₂ of the flattened gradient of the scalar probe loss w.r.t. X

Terms that a block does not have are omitted, so RMSNorm / bias-free LayerNorm blocks
report 13 terms (no beta1_norm / beta2_norm) and MLP-free blocks no w1/w2/ffn terms.

The block input is recorded by a forward pre-hook on ``view.block`` (:func:`record_block_inputs`)
installed only for the probe pass and removed after it. ∂L/∂X is obtained with
``torch.autograd.grad`` on those recorded inputs rather than ``backward()``, so no
parameter's ``.grad`` is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from weyl.diagnostics.spectral import product_spectral_norm, spectral_norm
from weyl.models.attention_view import AttentionLayerView

WEIGHT_TERMS = (
    "wq_sigma1",
    "wk_sigma1",
    "wv_sigma1",
    "wo_sigma1",
    "w1_sigma1",
    "w2_sigma1",
    "gamma1_norm",
    "beta1_norm",
    "gamma2_norm",
    "beta2_norm",
    "qk_sigma1",
    "ov_sigma1",
    "ffn_sigma1",
)
ACTIVATION_TERMS = ("x_norm", "grad_x_norm")


def layer_matrices(view: AttentionLayerView) -> dict[str, Tensor]:
    """Full-layer W_q, W_k, W_v (H·d_q, d) and W_o (d, H·d_q) rebuilt from the per-head view."""
    q, k, v, o = view.q_weight(), view.k_weight(), view.v_weight(), view.o_weight()
    heads, d_q, d = q.shape
    return {
        "wq": q.reshape(heads * d_q, d),
        "wk": k.reshape(heads * d_q, d),
        "wv": v.reshape(heads * d_q, d),
        # o is (H, d, d_q): column block h of W_o is o[h]
        "wo": o.permute(1, 0, 2).reshape(o.shape[1], heads * d_q),
    }


def _norm_params(norm: nn.Module | None) -> tuple[Tensor | None, Tensor | None]:
    if norm is None:
        return None, None
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    return (
        weight if isinstance(weight, Tensor) else None,
        bias if isinstance(bias, Tensor) else None,
    )


def weight_terms(view: AttentionLayerView) -> dict[str, float]:
    """The 13 weight terms of one block (fewer when it lacks biases or an MLP)."""
    return {name: float(value) for name, value in weight_term_tensors(view).items()}


@torch.no_grad()
def weight_term_tensors(view: AttentionLayerView) -> dict[str, Tensor]:
    """:func:`weight_terms` as 0-dim tensors on the weights' device (no host read)."""
    m = layer_matrices(view)
    out = {
        "wq_sigma1": spectral_norm(m["wq"]),
        "wk_sigma1": spectral_norm(m["wk"]),
        "wv_sigma1": spectral_norm(m["wv"]),
        "wo_sigma1": spectral_norm(m["wo"]),
        "qk_sigma1": product_spectral_norm(m["wq"].mT, m["wk"]),
        "ov_sigma1": product_spectral_norm(m["wo"], m["wv"]),
    }
    w1, w2 = view.mlp_w1(), view.mlp_w2()
    if w1 is not None:
        out["w1_sigma1"] = spectral_norm(w1)
    if w2 is not None:
        out["w2_sigma1"] = spectral_norm(w2)
    if w1 is not None and w2 is not None:
        out["ffn_sigma1"] = product_spectral_norm(w2, w1)
    for i, norm in ((1, view.norm1), (2, view.norm2)):
        gamma, beta = _norm_params(norm)
        if gamma is not None:
            out[f"gamma{i}_norm"] = torch.linalg.vector_norm(gamma.detach().float())
        if beta is not None:
            out[f"beta{i}_norm"] = torch.linalg.vector_norm(beta.detach().float())
    return {name: out[name] for name in WEIGHT_TERMS if name in out}


def _first_tensor(args: tuple, kwargs: dict) -> tuple[Tensor | None, str | int | None]:
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            return a, i
    for key, a in kwargs.items():
        if isinstance(a, Tensor):
            return a, key
    return None, None


@contextlib.contextmanager
def record_block_inputs(
    views: list[AttentionLayerView], for_grad: bool = False
) -> Iterator[dict[str, list[Tensor]]]:
    """Within the block, forward passes append each block's input tensor, per layer name.

    With ``for_grad`` an input that does not require grad (nothing upstream is trainable)
    is replaced by a grad-requiring leaf copy, so ∂L/∂X can still be taken.
    """
    inputs: dict[str, list[Tensor]] = {v.name: [] for v in views}
    handles = []
    for view in views:
        sink = inputs[view.name]

        def hook(_mod: nn.Module, args: tuple, kwargs: dict, sink: list[Tensor] = sink):
            x, where = _first_tensor(args, kwargs)
            if x is None:
                return None
            if for_grad and torch.is_grad_enabled() and not x.requires_grad:
                x = x.detach().requires_grad_(True)
                sink.append(x)
                if isinstance(where, int):
                    return (*args[:where], x, *args[where + 1 :]), kwargs
                return args, {**kwargs, where: x}
            sink.append(x)
            return None

        handles.append(view.block.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield inputs
    finally:
        for h in handles:
            h.remove()


def rms_token_norm(xs: list[Tensor]) -> float:
    """√(mean over tokens of ‖x_t‖²) over all recorded inputs (last dim = features)."""
    return float(rms_token_norm_tensor(xs))


def rms_token_norm_tensor(xs: list[Tensor]) -> Tensor:
    """:func:`rms_token_norm` as a 0-dim tensor on the inputs' device (no host read)."""
    sq = torch.stack([x.detach().float().square().sum() for x in xs]).sum()
    tokens = sum(x[..., 0].numel() for x in xs)
    return (sq / tokens).sqrt()


def input_grad_norms(loss: Tensor, inputs: dict[str, list[Tensor]]) -> dict[str, float]:
    """‖∂loss/∂X‖₂ for each recorded block input (flattened over all its recorded calls)."""
    return {name: float(v) for name, v in input_grad_norm_tensors(loss, inputs).items()}


def input_grad_norm_tensors(loss: Tensor, inputs: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    """:func:`input_grad_norms` as 0-dim tensors on the inputs' device (no host read)."""
    names = [n for n, xs in inputs.items() for _ in xs]
    flat = [x for xs in inputs.values() for x in xs]
    if not flat:
        return {}
    grads = torch.autograd.grad(loss, flat, allow_unused=True)
    sq: dict[str, Tensor] = {}
    for name, g in zip(names, grads, strict=True):
        if g is not None:
            part = g.detach().float().square().sum()
            sq[name] = part if name not in sq else sq[name] + part
    return {name: v.sqrt() for name, v in sq.items()}
