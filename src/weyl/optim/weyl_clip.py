"""The Weyl clip: Algorithm 1's spectral learning-rate rule, for any base optimizer's update.

Rule 1 of the paper asks a step to keep ``‖W_{t−1} − α ΔW‖₂ ≤ (1+τ)‖W_{t−1}‖₂``; by Weyl's
inequality it holds when ``α ≤ τ·σ₁(W_{t−1})/σ₁(ΔW)`` (Eq. 6). Per tensor and step::

    α_eff = min(α_t, τ · max(σ̂₁(W_{t−1}), sigma_floor) / σ̂₁(ΔW))

and the decoupled weight decay uses ``α_eff`` too. ``τ = None`` or ``inf`` disables the rule
(no power iteration is run; the base optimizer is reproduced exactly).

Why ``sigma_floor``: a literal Algorithm 1 sets ``α = 0`` forever for a tensor with σ₁ = 0
(zero-initialised biases, LayerNorm β), since no step keeps a zero matrix within (1+τ) of
itself. Below ``sigma_floor`` the rule measures the change against ``sigma_floor`` instead:
a zero tensor first grows by ``τ·sigma_floor`` in σ₁ per step (reaching the floor in 1/τ
steps), then at most by the factor (1+τ) per step, as every other tensor. Above the floor
the rule is exactly Algorithm 1. Default 1e-2, far below the σ₁ of any initialised weight
(≈0.3–3 for GPT-2/ViT matrices, ≈28 for a d=768 LayerNorm γ).

σ̂₁ follows :mod:`weyl.optim.spectral_norm` (matrix-view rule, warm-started power iteration,
vectors by L2 norm). The optimizers built on :class:`SpectrallyClippedOptimizer` keep one
right-singular vector per matrix for the weight and one for the update in their state
(``sigma_vec_weight`` / ``sigma_vec_update``), and record per tensor and step the scheduled
LR, the effective LR, whether the clip fired and both σ̂₁, readable with one host transfer
through :meth:`SpectrallyClippedOptimizer.lr_report`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from weyl.optim.spectral_norm import (
    ShardLayout,
    initial_vector,
    local_tensor,
    matrix_shape,
    spectral_norm_estimates,
    vector_seed,
)

DEFAULT_TAU = 0.01
DEFAULT_SIGMA_FLOOR = 1e-2
# Iterations for freshly initialised vectors, so the first step's σ̂ is already close.
WARMUP_POWER_ITERS = 20

_VEC_KEYS = ("sigma_vec_weight", "sigma_vec_update")
_REPORT_ROWS = ("lr", "lr_eff", "clipped", "sigma_weight", "sigma_update")


def tau_enabled(tau: float | None) -> bool:
    """Whether a τ value turns the clip on (``None`` and ``inf`` turn it off)."""
    return tau is not None and math.isfinite(tau)


@dataclass(frozen=True)
class WeylClip:
    """Algorithm 1 lines 6–9 as a rule: the clipped learning rate from σ̂₁ of W and ΔW."""

    tau: float | None = DEFAULT_TAU
    sigma_floor: float = DEFAULT_SIGMA_FLOOR
    power_iters: int = 1

    def __post_init__(self) -> None:
        if self.tau is not None and not self.tau > 0:
            raise ValueError(f"tau={self.tau}: must be > 0, or None/inf to disable the clip")
        if not self.sigma_floor >= 0:
            raise ValueError(f"sigma_floor={self.sigma_floor}: must be ≥ 0")
        if self.power_iters < 1:
            raise ValueError(f"power_iters={self.power_iters}: must be ≥ 1")

    @classmethod
    def from_group(cls, group: dict[str, Any]) -> WeylClip:
        """The rule configured by a param group's ``tau``/``sigma_floor``/``power_iters``."""
        return cls(group["tau"], group["sigma_floor"], group["power_iters"])

    @property
    def enabled(self) -> bool:
        """False when τ is None or inf."""
        return tau_enabled(self.tau)

    def effective_lr(
        self, lr: float | Tensor, sigma_weight: Tensor, sigma_update: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(α_eff, fired)`` per tensor: ``min(lr, τ·max(σW, floor)/σΔ)`` and ``lr > limit``."""
        lr_t = torch.as_tensor(lr, dtype=torch.float32, device=sigma_weight.device)
        if not self.enabled:
            return lr_t.expand_as(sigma_weight).clone(), torch.zeros_like(sigma_weight)
        anchor = sigma_weight.clamp_min(self.sigma_floor)
        # σΔ = 0 (no gradient signal): nothing to clip, the limit is +inf.
        limit = torch.where(
            sigma_update > 0,
            self.tau * anchor / sigma_update.clamp_min(1e-30),
            torch.full_like(anchor, math.inf),
        )
        fired = lr_t > limit
        return torch.minimum(lr_t, limit), fired.float()

    def estimate(
        self,
        weights: Sequence[Tensor],
        updates: Sequence[Tensor],
        layouts: Sequence[ShardLayout],
        states: Sequence[dict[str, Any]],
        seeds: Sequence[str],
    ) -> tuple[Tensor, Tensor]:
        """σ̂₁ of local weights and updates, creating/refining the vectors kept in ``states``."""
        fresh = False
        wvecs: list[Tensor | None] = []
        uvecs: list[Tensor | None] = []
        for w, lay, st, seed in zip(weights, layouts, states, seeds):
            ms = matrix_shape(lay.shape)
            if ms is None:
                wvecs.append(None)
                uvecs.append(None)
                continue
            if "sigma_vec_weight" not in st:
                fresh = True
                st["sigma_vec_weight"] = initial_vector(ms[1], vector_seed(seed + "/w"), w.device)
                st["sigma_vec_update"] = initial_vector(ms[1], vector_seed(seed + "/u"), w.device)
            wvecs.append(st["sigma_vec_weight"])
            uvecs.append(st["sigma_vec_update"])
        iters = max(self.power_iters, WARMUP_POWER_ITERS) if fresh else self.power_iters
        # One call for both: the per-call work (bucketing, foreach norms, collectives) is paid once.
        n = len(weights)
        sig = spectral_norm_estimates(
            [*weights, *updates], [*layouts, *layouts], [*wvecs, *uvecs], iters
        )
        return sig[:n], sig[n:]


class SpectrallyClippedOptimizer(torch.optim.Optimizer):
    """Base for optimizers whose per-tensor step is scaled by :class:`WeylClip`.

    Subclasses compute an update direction ``D`` per tensor (their base optimizer's step
    divided by the LR) and call :meth:`_clipped_lrs`; the σ₁ machinery, the state vectors,
    the record and its report live here once. Param groups accept ``param_names`` (as torch's
    named-parameter support and :func:`weyl.optim.build_optimizer` set them); names default
    to ``g{group}.p{index}``.
    """

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        for group in self.param_groups:
            WeylClip.from_group(group)  # validate each group's rule once, up front
        self._records: dict[tuple[int, str], tuple[list[str], Tensor]] = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's add_param_group, then validation of the group's clip settings."""
        super().add_param_group(param_group)
        WeylClip.from_group(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step over every parameter that has a gradient, bucketed by device."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            by_device: dict[torch.device, list[int]] = defaultdict(list)
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
                by_device[local_tensor(p).device].append(pi)
            for indices in by_device.values():
                self._step_bucket(gi, group, indices)
        return loss

    def _step_bucket(self, gi: int, group: dict[str, Any], indices: list[int]) -> None:
        """Update ``group["params"][i]`` for ``i`` in ``indices`` (all on one device)."""
        raise NotImplementedError

    @staticmethod
    def _name(group: dict[str, Any], gi: int, pi: int) -> str:
        names = group.get("param_names")
        return names[pi] if names is not None else f"g{gi}.p{pi}"

    def _clipped_lrs(
        self,
        gi: int,
        group: dict[str, Any],
        indices: list[int],
        params: list[Tensor],
        weights: list[Tensor],
        directions: list[Tensor],
        direction_scale: Tensor | None,
        layouts: list[ShardLayout],
    ) -> Tensor | None:
        """Per-tensor α_eff (fp32, on the params' device) for this step, recorded; ``None`` if off.

        ``weights``/``directions`` are local tensors (shards under FSDP2); the true update
        direction is ``direction_scale[i] · directions[i]`` (the scale lets AdamW² fold its
        bias correction in without an extra pass over the tensors).
        """
        rule = WeylClip.from_group(group)
        lr = group["lr"]
        names = [self._name(group, gi, pi) for pi in indices]
        device = weights[0].device
        if not rule.enabled:
            rec = torch.full((len(_REPORT_ROWS), len(indices)), math.nan, dtype=torch.float64)
            rec[0] = float(lr)
            rec[1] = float(lr)
            rec[2] = 0.0
            self._records[(gi, str(device))] = (names, rec)
            return None
        states = [self.state[p] for p in params]
        seeds = [f"{gi}.{pi}.{tuple(lay.shape)}" for pi, lay in zip(indices, layouts)]
        sig_w, sig_u = rule.estimate(weights, directions, layouts, states, seeds)
        if direction_scale is not None:
            sig_u = sig_u * direction_scale
        lr_eff, fired = rule.effective_lr(lr, sig_w, sig_u)
        # float64 so that the scheduled LR reads back exactly as the scheduler set it.
        lr_row = torch.full_like(lr_eff, float(lr), dtype=torch.float64)
        rows = [lr_row, lr_eff.double(), fired.double(), sig_w.double(), sig_u.double()]
        self._records[(gi, str(device))] = (names, torch.stack(rows))
        return lr_eff

    def lr_report(self) -> dict[str, dict[str, float]]:
        """Last step's ``{name: {lr, lr_eff, clipped, sigma_weight, sigma_update}}``, one transfer.

        ``clipped`` is 1.0 where the clip fired; σ̂ are NaN in groups with the clip off.
        """
        if not self._records:
            return {}
        names: list[str] = []
        mats = []
        for n, rec in self._records.values():
            names.extend(n)
            mats.append(rec.to(mats[0].device) if mats else rec)
        values = torch.cat(mats, dim=1).tolist()
        return {
            name: {key: values[r][j] for r, key in enumerate(_REPORT_ROWS)}
            for j, name in enumerate(names)
        }

    def clip_fraction(self) -> float:
        """Fraction of tensors whose LR the clip cut in the last step (0.0 before any step)."""
        rep = self.lr_report()
        return sum(r["clipped"] for r in rep.values()) / len(rep) if rep else 0.0

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict, keeping the power-iteration vectors in fp32.

        torch casts every floating state tensor to its parameter's dtype; a bf16 copy of a
        singular vector would make a resumed run diverge from the uninterrupted one.
        """
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        vectors = {}
        for pid, p in zip(saved_ids, params):
            st = state_dict["state"].get(pid, {})
            for key in _VEC_KEYS:
                if key in st:
                    vectors[(id(p), key)] = (p, st[key])
        super().load_state_dict(state_dict)
        for (_, key), (p, value) in vectors.items():
            self.state[p][key] = value.detach().to(device=p.device, dtype=torch.float32, copy=True)
