"""SGDW²: SGD with momentum and decoupled weight decay under the Weyl clip.

The same rule as AdamW² (:mod:`weyl.optim.weyl_clip`) on another base optimizer's direction::

    B_t = μ·B_{t−1} + (1−dampening)·G   (B_1 = G, torch.optim.SGD's convention)
    ΔW  = G + μ·B_t if nesterov else B_t
    α   = min(α_t, τ·max(σ̂₁(W_{t−1}), sigma_floor)/σ̂₁(ΔW))
    W_t = W_{t−1} − α·ΔW − α·λ·W_{t−1}

Weight decay is decoupled (SGDW, Loshchilov & Hutter), as in Algorithm 1; with
``weight_decay=0`` and ``tau=None`` it is ``torch.optim.SGD`` with momentum. With ``tau=None``
and decay it is the ``optim=sgd`` baseline, so SGD and SGD + clip differ in the clip only
(``torch.optim.SGD`` adds the decay to the gradient instead). A loaded ``torch.optim.SGD``
state dict continues with its momentum buffers, its ``weight_decay`` then applied decoupled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from weyl.optim.spectral_norm import batched_path, local_tensor, shard_layout
from weyl.optim.weyl_clip import (
    DEFAULT_POWER_ITERS,
    DEFAULT_SIGMA_FLOOR,
    DEFAULT_TAU,
    DEFAULT_WEIGHT_ITERS,
    SpectrallyClippedOptimizer,
    WeylClip,
    check_lr,
)


class SGDW2(SpectrallyClippedOptimizer):
    """SGD-momentum with decoupled decay and the per-tensor spectral LR clip."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        tau: float | None = DEFAULT_TAU,
        power_iters: int = DEFAULT_POWER_ITERS,
        sigma_floor: float = DEFAULT_SIGMA_FLOOR,
        weight_iters: int = DEFAULT_WEIGHT_ITERS,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            tau=tau,
            power_iters=power_iters,
            sigma_floor=sigma_floor,
            weight_iters=weight_iters,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        """torch.optim.SGD's argument rules (momentum below 1: SGDW² has no divergent case)."""
        check_lr(group["lr"])
        if not 0 <= group["momentum"] < 1:
            raise ValueError(f"momentum={group['momentum']}: must be in [0, 1)")
        if group["nesterov"] and (group["momentum"] == 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")
        if not group["weight_decay"] >= 0:
            raise ValueError(f"weight_decay={group['weight_decay']}: must be ≥ 0")

    def _step_bucket(
        self, gi: int, group: dict[str, Any], rule: WeylClip | None, indices: list[int]
    ) -> None:
        params = [group["params"][pi] for pi in indices]
        lr, wd, mu = float(group["lr"]), group["weight_decay"], group["momentum"]
        weights = [local_tensor(p) for p in params]
        grads = [local_tensor(p.grad) for p in params]
        if mu != 0:
            fresh = [p for p in params if "momentum_buffer" not in self.state[p]]
            for p in fresh:
                self.state[p]["momentum_buffer"] = p.grad.detach().clone()
            bufs = [local_tensor(self.state[p]["momentum_buffer"]) for p in params]
            fresh_ids = {id(p) for p in fresh}
            seen = [i for i, p in enumerate(params) if id(p) not in fresh_ids]
            if seen:
                sb = [bufs[i] for i in seen]
                torch._foreach_mul_(sb, mu)
                torch._foreach_add_(sb, [grads[i] for i in seen], alpha=1 - group["dampening"])
            directions = torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else bufs
        else:
            directions = grads

        if rule is None:
            self._record_unclipped(gi, group, indices, weights[0].device)
            if wd != 0:
                torch._foreach_mul_(weights, 1 - lr * wd)
            torch._foreach_add_(weights, directions, alpha=-lr)
            return
        layouts = [shard_layout(p) for p in params]
        if batched_path(weights[0].device):
            # As AdamW²: directions and weights copied into a workspace the estimator reads in
            # place; the per-tensor factors stay on the device and apply per buffer.
            ws = self._workspace(gi, weights)
            n = len(params)
            torch._foreach_copy_(ws.views, [*directions, *weights])
            copies = ws.views[n:]
            lr_eff = self._clipped_lrs(
                rule, gi, group, indices, params, copies, ws.views[:n], None, layouts, ws
            )
            if wd != 0:
                ws.scale_second_half(1 - lr_eff * wd)
            ws.sub_scaled_halves(lr_eff)
            torch._foreach_copy_(weights, copies)
            return
        lr_eff = self._clipped_lrs(
            rule, gi, group, indices, params, weights, directions, None, layouts
        )
        if wd != 0:
            torch._foreach_mul_(weights, list((1 - lr_eff * wd).unbind(0)))
        torch._foreach_addcmul_(weights, directions, list((-lr_eff).unbind(0)))
