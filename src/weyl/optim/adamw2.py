"""AdamW² (Algorithm 1 of "Taming Transformer Without Using Learning Rate Warmup").

Per tensor W at step t, with α_t = ``group["lr"]`` (whatever a scheduler set)::

    M_t = β₁M + (1−β₁)G,   V_t = β₂V + (1−β₂)G²,   M̂ = M_t/(1−β₁ᵗ),   V̂ = V_t/(1−β₂ᵗ)
    ΔW  = M̂ / (√V̂ + ε)                      # ε outside the root, as torch.optim.AdamW
    α   = min(α_t, τ·max(σ̂₁(W_{t−1}), sigma_floor)/σ̂₁(ΔW))     # see weyl.optim.weyl_clip
    W_t = W_{t−1} − α·ΔW − α·λ·W_{t−1}        # decoupled decay with the clipped α

Default ``tau=0.01``: the paper's GPT-S/L value (Table 2b); its ViT recipes use 0.004/0.003 and
Swin 0.004. ``tau=None`` or ``inf`` in a group reproduces ``torch.optim.AdamW`` for that group
(same foreach arithmetic, no σ₁ estimate; complex tensors as torch: their real and imaginary
parts as separate entries). σ̂₁ by warm-started Lanczos: ``power_iters`` steps on ΔW and
``weight_iters`` on W per step (3 and 1; 20 on a tensor's first step).
σ₁ of each parameter kind follows :mod:`weyl.optim.spectral_norm`. The arithmetic is that of
``torch._foreach_*`` over all tensors of a group and device (on the CPU the same per-tensor ops,
for matrices per row block); the clip factors are computed as tensors.

Passes over memory (CPU): ΔW is formed as ``(c/b₁)·m/(√v + c·ε)`` (c = √(1−β₂ᵗ), b₁ = 1−β₁ᵗ;
one pass fewer than torch's ``√v/c + ε``), pre-scaled to ``−ΔW/λ`` so that decay and step are one
``lerp``. For matrices the moments are updated and ΔW formed inside the estimator's first pass,
row block by row block while the block is in cache (``prepare`` of
:func:`weyl.optim.spectral_norm.spectral_norm_estimates`), so g, m, v are read and m, v, ΔW
written once before the Lanczos products read ΔW from cache. The ΔW buffer is kept per parameter
between steps (not in the state dict: +50% over AdamW's m and v, the size of the buffer torch's
AdamW allocates inside each step, so peak memory is equal), since a fresh allocation page-faults
every step.

Accelerators: a fixed number of kernels per step whatever the number of tensors (issue 17): ΔW is
formed by foreach kernels in a :class:`~weyl.optim.matrix_workspace.MatrixWorkspace` (one buffer
per column count) next to a copy of W, σ̂₁ of all matrices is estimated there in batches, the
update is applied per buffer with per-tensor factors that stay on the device, and W is copied
back; no value is read by the host (``benchmarks/optimizer_step.py --profile``). The workspace
holds two copies of the parameters between steps (``keep_scratch=False``: allocated per step).

Works under DDP (bitwise identical ranks: all inputs are identical and no randomness is
drawn from the global RNG) and under FSDP2 ``fully_shard`` (σ₁ of the full logical matrix
via distributed power iteration, see :mod:`weyl.optim.spectral_norm`).
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from weyl.optim.spectral_norm import batched_path, local_tensor, matrix_shape, shard_layout
from weyl.optim.weyl_clip import (
    DEFAULT_POWER_ITERS,
    DEFAULT_SIGMA_FLOOR,
    DEFAULT_TAU,
    DEFAULT_WEIGHT_ITERS,
    SpectrallyClippedOptimizer,
    WeylClip,
    check_lr,
)

# Below this weight decay −ΔW/λ could overflow fp32/bf16: decay and step are applied apart.
_MIN_FOLDED_DECAY = 1e-20


def _update_moments(
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    grads: list[Tensor],
    beta1: float,
    beta2: float,
) -> None:
    """Adam's moments, torch.optim.AdamW's foreach ops: m ← lerp(m, g, 1−β₁), v ← β₂v + (1−β₂)g²."""
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)


class _DeltaForm:
    """Updates tensor ``i``'s moments and forms ``updates[i] = k_i·m/(√v + c_i·ε)`` in place,
    whole or by rows of its matrix view.

    Called by the σ̂₁ estimator just before it first reads a row block (``prepare`` of
    :func:`weyl.optim.spectral_norm.spectral_norm_estimates`); the per-tensor ops are those the
    foreach kernels run on the CPU, so the result does not depend on the blocking.
    """

    def __init__(
        self,
        updates: list[Tensor],
        moments: tuple[list[Tensor], list[Tensor], list[Tensor], float, float],
        eps_terms: list[float],
        ks: list[float],
    ) -> None:
        self.updates = updates
        self.exp_avgs, self.exp_avg_sqs, self.grads, beta1, beta2 = moments
        self.weight1, self.beta2, self.weight2 = 1 - beta1, beta2, 1 - beta2
        self.eps_terms, self.ks = eps_terms, ks
        self.zeros: dict[torch.dtype, Tensor] = {}  # 0-d broadcast bases of the out= addcdiv
        self.blocked = [self.in_blocks(i) for i in range(len(updates))]
        self._views: dict[int, tuple[Tensor, ...]] = {}

    def in_blocks(self, i: int) -> bool:
        """Whether the estimator forms tensor ``i`` (contiguous, and measured in its own dtype:
        a float64 vector is converted before the estimator would call back)."""
        u = self.updates[i]
        ts = (u, self.exp_avgs[i], self.exp_avg_sqs[i], self.grads[i])
        vector = matrix_shape(u.shape) is None
        return all(t.is_contiguous() for t in ts) and not (vector and u.dtype == torch.float64)

    def block(self, i: int, lo: int, hi: int) -> None:
        """The estimator's call before it reads rows ``lo:hi``: forms them if tensor ``i`` is
        formed in blocks (the others were formed whole before the estimator ran)."""
        if self.blocked[i]:
            self(i, lo, hi)

    def __call__(self, i: int, lo: int, hi: int | None) -> None:
        if hi is None:
            u, m, v, g = self.updates[i], self.exp_avgs[i], self.exp_avg_sqs[i], self.grads[i]
        else:
            u, m, v, g = (t[lo:hi] for t in self._rows(i))
        m.lerp_(g, self.weight1)
        v.mul_(self.beta2)
        v.addcmul_(g, g, value=self.weight2)
        if u.dtype not in self.zeros:
            self.zeros[u.dtype] = torch.zeros((), dtype=u.dtype, device=u.device)
        torch.sqrt(v, out=u)
        u.add_(self.eps_terms[i])
        torch.addcdiv(self.zeros[u.dtype], m, u, value=self.ks[i], out=u)

    def _rows(self, i: int) -> tuple[Tensor, ...]:
        """Tensor ``i``'s u, m, v, g as rows of its matrix view (a vector: one element a row)."""
        views = self._views.get(i)
        if views is None:
            ms = matrix_shape(self.updates[i].shape)
            cols = 1 if ms is None else ms[1]
            ts = (self.updates[i], self.exp_avgs[i], self.exp_avg_sqs[i], self.grads[i])
            views = self._views[i] = tuple(t.view(-1, cols) for t in ts)
        return views


def checked_betas(betas: Sequence[float | Tensor]) -> tuple[float, float]:
    """``(β₁, β₂)`` as floats, by torch's rules: two numbers or two 1-element Tensors, in [0, 1)."""
    if len(betas) != 2:
        raise ValueError(f"betas={tuple(betas)}: needs two values (beta1, beta2)")
    tensors = [isinstance(b, Tensor) for b in betas]
    if any(tensors) and not all(tensors):
        raise ValueError("betas must be either both floats or both Tensors")
    values = []
    for i, b in enumerate(betas):
        if isinstance(b, Tensor):
            if b.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")
            b = b.item()
        elif isinstance(b, bool) or not isinstance(b, numbers.Real):
            raise ValueError(f"betas[{i}]={b!r}: must be a float or a 1-element Tensor")
        values.append(float(b))
    if not all(0 <= b < 1 for b in values):
        raise ValueError(f"betas={tuple(values)}: each must be in [0, 1)")
    return values[0], values[1]


class AdamW2(SpectrallyClippedOptimizer):
    """AdamW with the per-tensor spectral LR clip of Algorithm 1 (a plain torch Optimizer)."""

    _INSTANCE_SETTINGS: ClassVar[dict[str, Any]] = {"keep_scratch": True}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        tau: float | None = DEFAULT_TAU,
        power_iters: int = DEFAULT_POWER_ITERS,
        sigma_floor: float = DEFAULT_SIGMA_FLOOR,
        weight_iters: int = DEFAULT_WEIGHT_ITERS,
        keep_scratch: bool = True,
    ) -> None:
        """``keep_scratch`` keeps the scratch between steps: on the CPU one parameter-sized ΔW
        buffer (measured 0.94× torch AdamW's step time with it and 1.2–1.3× without, at the cost
        of +50% of AdamW's state; benchmarks/optimizer_step.py), on accelerators the workspace
        (ΔW and a copy of W)."""
        self.keep_scratch = keep_scratch
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            tau=tau,
            power_iters=power_iters,
            sigma_floor=sigma_floor,
            weight_iters=weight_iters,
        )
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        """torch.optim.AdamW's argument rules; tensor betas are read as floats."""
        check_lr(group["lr"])
        group["betas"] = checked_betas(group["betas"])
        if not group["eps"] >= 0:
            raise ValueError(f"eps={group['eps']}: must be ≥ 0")
        if not group["weight_decay"] >= 0:
            raise ValueError(f"weight_decay={group['weight_decay']}: must be ≥ 0")

    def _step_bucket(
        self, gi: int, group: dict[str, Any], rule: WeylClip | None, indices: list[int]
    ) -> None:
        params = [group["params"][pi] for pi in indices]
        beta1, beta2 = group["betas"]
        lr, wd, eps = float(group["lr"]), group["weight_decay"], group["eps"]
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        weights = [local_tensor(p) for p in params]
        grads = [local_tensor(p.grad) for p in params]
        exp_avgs = [local_tensor(self.state[p]["exp_avg"]) for p in params]
        exp_avg_sqs = [local_tensor(self.state[p]["exp_avg_sq"]) for p in params]
        steps = [self.state[p]["step"] for p in params]
        if any(torch.is_complex(p) for p in params):
            # As torch's AdamW: a complex tensor is its (re, im) pairs, each with its own
            # moments (only with the clip off, which the base class enforces).
            weights, grads, exp_avgs, exp_avg_sqs = (
                [torch.view_as_real(t) if torch.is_complex(t) else t for t in ts]
                for ts in (weights, grads, exp_avgs, exp_avg_sqs)
            )

        torch._foreach_add_(steps, 1.0)
        # Steps live on the CPU (as in torch.optim.AdamW): reading them syncs no device.
        step_values = torch.stack(steps).tolist()
        bc1 = [1 - beta1**s for s in step_values]
        bc2_sqrt = [(1 - beta2**s) ** 0.5 for s in step_values]

        moments = (exp_avgs, exp_avg_sqs, grads, beta1, beta2)
        if rule is None:
            _update_moments(*moments)
            # Clip off: torch.optim.AdamW's own arithmetic, op for op.
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, bc2_sqrt)
            torch._foreach_add_(denom, eps)
            self._record_unclipped(gi, group, indices, weights[0].device)
            if wd != 0:
                torch._foreach_mul_(weights, 1 - lr * wd)
            torch._foreach_addcdiv_(weights, exp_avgs, denom, [(lr / b) * -1 for b in bc1])
            return

        # ΔW = m̂/(√v̂+ε) = (c/b₁)·m/(√v + c·ε) with c = √(1−β₂ᵗ), b₁ = 1−β₁ᵗ: adding c·ε
        # replaces torch's division of the denominator by c, saving one pass. ΔW is then
        # materialised in the denominator's own buffer (no second allocation), pre-scaled by
        # k so that the update is a single lerp that also applies the weight decay:
        #   W + αλ·(−ΔW/λ − W) = (1 − αλ)·W − α·ΔW.
        fold = wd > _MIN_FOLDED_DECAY
        ks = [(b2 / b1) * (-1 / wd if fold else 1.0) for b1, b2 in zip(bc1, bc2_sqrt)]
        layouts = [shard_layout(p) for p in params]
        # updates = −ΔW/λ (folded) or ΔW: σ̂₁(ΔW) = λ·σ̂₁(updates) or σ̂₁(updates).
        scale = wd if fold else 1.0
        device = weights[0].device
        if batched_path(device):
            _update_moments(*moments)
            ws = self._workspace(gi, exp_avg_sqs, keep=self.keep_scratch)
            n = len(params)
            updates, copies = ws.views[:n], ws.views[n:]
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denom, [b2 * eps for b2 in bc2_sqrt])
            torch._foreach_zero_(updates)
            torch._foreach_addcdiv_(updates, exp_avgs, denom, ks)
            del denom
            torch._foreach_copy_(copies, weights)
            lr_eff = self._clipped_lrs(
                rule, gi, group, indices, params, copies, updates, scale, layouts, ws
            )
            # Per-tensor factors stay on the device: applied per workspace buffer (foreach
            # kernels take per-tensor factors only as host numbers), then W is copied back.
            if fold:
                ws.lerp_halves(lr_eff * wd)
            else:
                ws.sub_scaled_halves(lr_eff)
            torch._foreach_copy_(weights, copies)
            return
        if self.keep_scratch:
            # CPU allocators hand big blocks back to the OS: a fresh buffer would page-fault
            # every step (measured ~15% of a whole AdamW step), so one is kept per parameter.
            updates = [self._update_buffer(p, v) for p, v in zip(params, exp_avg_sqs)]
        else:
            updates = [
                torch.empty_like(v, memory_format=torch.contiguous_format) for v in exp_avg_sqs
            ]
        form = _DeltaForm(updates, moments, [b2 * eps for b2 in bc2_sqrt], ks)
        # The moments and ΔW of the matrices are updated and formed by the estimator's first
        # pass, row block by row block while the block is in cache: g, m, v are read and m, v,
        # ΔW written once, against four passes over memory for the moments and one for ΔW
        # apart. The same elementwise ops, so bitwise the same. The rest here, whole.
        for i, blocked in enumerate(form.blocked):
            if not blocked:
                form(i, 0, None)
        lr_eff = self._clipped_lrs(
            rule, gi, group, indices, params, weights, updates, scale, layouts, prepare=form.block
        )
        # On the CPU one list read is a memcpy (no device to wait for) and lets the update use
        # torch's scalar-list kernels.
        alphas = lr_eff.tolist()
        if fold:
            torch._foreach_lerp_(weights, updates, [a * wd for a in alphas])
        else:
            for w, u, a in zip(weights, updates, alphas):
                w.add_(u, alpha=-a)

    def _update_buffer(self, p: Tensor, like: Tensor) -> Tensor:
        """The scratch buffer that holds ``p``'s ΔW within a step (CPU; not in the state dict)."""
        # Looked up lazily: torch's Optimizer pickling keeps only defaults/state/param_groups.
        # Keyed by id with a weak reference: tensors cannot key a WeakKeyDictionary (their ==
        # is elementwise), and a freed parameter's id may be reused.
        bufs = self.__dict__.setdefault("_scratch", {})
        ref, buf = bufs.get(id(p), (None, None))
        if ref is None or ref() is not p or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = torch.empty_like(like, memory_format=torch.contiguous_format)
            bufs[id(p)] = (weakref.ref(p), buf)
        return buf

    def scratch_bytes(self) -> int:
        """Bytes of the scratch kept between steps: ΔW buffers (CPU), workspaces (accelerators)."""
        bufs = self.__dict__.get("_scratch", {})
        total = sum(b.numel() * b.element_size() for _, b in bufs.values())
        for ws in self.__dict__.get("_workspaces", {}).values():
            total += sum(b.numel() * b.element_size() for b in [*ws.buffers, *ws.flats])
        return total
