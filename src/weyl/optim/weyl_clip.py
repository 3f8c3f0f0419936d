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
the rule is exactly Algorithm 1. Default 1e-2 (config key ``optim.sigma_floor``), far below
the σ₁ of any initialised weight (≈0.3–3 for GPT-2/ViT matrices, ≈28 for a d=768 LayerNorm γ);
``sigma_floor=0`` is the literal Algorithm 1. The record's ``floored`` row says which tensors
the last step measured against the floor (the trainer logs their count as ``optim/floored``).

σ̂₁ follows :mod:`weyl.optim.spectral_norm` (matrix-view rule, warm-started Golub–Kahan–Lanczos:
``power_iters`` steps on ΔW, ``weight_iters`` on W, 3 and 1 by default; vectors by L2 norm).
The optimizers built on :class:`SpectrallyClippedOptimizer` keep one right-singular vector
per matrix for the weight and one for the update in their state (``sigma_vec_weight`` /
``sigma_vec_update``), and record per tensor and step the scheduled LR, the effective LR,
whether the clip fired and both σ̂₁, readable with one host transfer through
:meth:`SpectrallyClippedOptimizer.lr_report`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

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

if TYPE_CHECKING:
    from weyl.optim.matrix_workspace import MatrixWorkspace

DEFAULT_TAU = 0.01
DEFAULT_SIGMA_FLOOR = 1e-2
# Lanczos steps per optimizer step on ΔW and on W_{t−1} (docs/sigma-estimates.md).
DEFAULT_POWER_ITERS = 3
DEFAULT_WEIGHT_ITERS = 1
# Iterations for freshly initialised vectors, so the first step's σ̂ is already close.
WARMUP_POWER_ITERS = 20

_VEC_KEYS = ("sigma_vec_weight", "sigma_vec_update")
_REPORT_ROWS = ("lr", "lr_eff", "clipped", "floored", "sigma_weight", "sigma_update")
# Flags of torch's optimizers that change the maths and are not implemented here: a loaded
# torch state dict must carry them at these values (see SpectrallyClippedOptimizer.load_state_dict).
_FOREIGN_FLAGS = {"amsgrad": False, "maximize": False, "differentiable": False}


def check_lr(lr: float | Tensor) -> None:
    """torch's learning-rate rules: a Tensor lr holds one element; the value is ≥ 0."""
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not lr >= 0:
        raise ValueError(f"lr={lr}: must be ≥ 0")


def clip_off(tau: float | None) -> bool:
    """Whether a τ value turns the clip off (``None`` or ``inf``): the one place that decides it."""
    return tau is None or tau == math.inf


@dataclass(frozen=True)
class WeylClip:
    """Algorithm 1 lines 6–9 as a rule: the clipped learning rate from σ̂₁ of W and ΔW.

    A rule is always on; a group with the clip off has no rule (see :func:`clip_rule`).
    """

    tau: float = DEFAULT_TAU
    sigma_floor: float = DEFAULT_SIGMA_FLOOR
    power_iters: int = DEFAULT_POWER_ITERS
    weight_iters: int = DEFAULT_WEIGHT_ITERS

    def __post_init__(self) -> None:
        if clip_off(self.tau) or not self.tau > 0:
            raise ValueError(f"tau={self.tau}: must be > 0, or None/inf to disable the clip")
        if not self.sigma_floor >= 0:
            raise ValueError(f"sigma_floor={self.sigma_floor}: must be ≥ 0")
        if self.power_iters < 1:
            raise ValueError(f"power_iters={self.power_iters}: must be ≥ 1")
        if self.weight_iters < 1:
            raise ValueError(f"weight_iters={self.weight_iters}: must be ≥ 1")

    def effective_lr(
        self, lr: float | Tensor, sigma_weight: Tensor, sigma_update: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(α_eff, fired)`` per tensor: ``min(lr, τ·max(σW, floor)/σΔ)`` and ``lr > limit``."""
        device = sigma_weight.device
        if isinstance(lr, Tensor):
            lr_t = lr.to(device=device, dtype=torch.float32)
        else:  # a fill: as_tensor of a number would copy it from the host (and wait) on a GPU
            lr_t = torch.full((), float(lr), dtype=torch.float32, device=device)
        anchor = sigma_weight.clamp_min(self.sigma_floor)
        # σΔ = 0 (no gradient signal): nothing to clip, the limit is +inf.
        limit = torch.where(
            sigma_update > 0, self.tau * anchor / sigma_update.clamp_min(1e-30), math.inf
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
        workspace: MatrixWorkspace | None = None,
        prepare: Callable[[int, int, int | None], None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """σ̂₁ of local weights and updates, creating/refining the vectors kept in ``states``.

        A tensor with a zero-size dimension has σ₁ = 0 and is not handed to the estimator (no
        matrix view to iterate); float64 vectors are measured in fp32, as matrices are.
        ``workspace`` (batched path): one whose views are ``[*updates, *weights]``, read in place.
        ``prepare(i, lo, hi)``: forms rows ``lo:hi`` of ``updates[i]`` before they are read (see
        :func:`weyl.optim.spectral_norm.spectral_norm_estimates`).
        """
        n = len(weights)
        fresh = False
        live: list[int] = []
        wvecs: list[Tensor | None] = []
        uvecs: list[Tensor | None] = []
        for i, (w, lay, st, seed) in enumerate(zip(weights, layouts, states, seeds)):
            if math.prod(lay.shape) == 0:
                continue
            live.append(i)
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
        if len(live) < n:
            sig_w = torch.zeros(n, dtype=torch.float32, device=weights[0].device)
            sig_u = torch.zeros_like(sig_w)
            if not live:
                return sig_w, sig_u

        def measurable(t: Tensor, vec: Tensor | None) -> Tensor:
            # The estimator's vector norms accumulate in fp32 and refuse a narrowing input.
            return t.float() if vec is None and t.dtype == torch.float64 else t

        ws = [measurable(weights[i], v) for i, v in zip(live, wvecs)]
        us = [measurable(updates[i], v) for i, v in zip(live, uvecs)]
        lays = [layouts[i] for i in live]
        m = len(live)
        if fresh:
            iters = [max(self.weight_iters, self.power_iters, WARMUP_POWER_ITERS)] * (2 * m)
        else:
            iters = [self.power_iters] * m + [self.weight_iters] * m
        # One call for both: the per-call work (bucketing, foreach norms, collectives) is paid
        # once. Updates first: the order of a workspace (see AdamW2) and, with more steps on
        # ΔW, the batched path's rows that run longest come first.
        hook = None
        if prepare is not None:

            def hook(k: int, lo: int, hi: int) -> None:
                if k < m:  # an update (the weights need no forming)
                    prepare(live[k], lo, hi)

        sig = spectral_norm_estimates(
            [*us, *ws], [*lays, *lays], [*uvecs, *wvecs], iters, workspace, hook
        )
        if len(live) == n:
            return sig[n:], sig[:n]
        sig_u[live] = sig[: len(live)]
        sig_w[live] = sig[len(live) :]
        return sig_w, sig_u


def clip_rule(
    tau: float | None,
    sigma_floor: float = DEFAULT_SIGMA_FLOOR,
    power_iters: int = DEFAULT_POWER_ITERS,
    weight_iters: int = DEFAULT_WEIGHT_ITERS,
) -> WeylClip | None:
    """The validated rule for these settings, or ``None`` when τ turns the clip off."""
    if not clip_off(tau):
        return WeylClip(tau, sigma_floor, power_iters, weight_iters)
    # Off, but a bad floor or iteration count is still a mistake worth reporting now.
    WeylClip(DEFAULT_TAU, sigma_floor, power_iters, weight_iters)
    return None


_GroupClip = tuple[tuple[Any, ...], WeylClip | None]


def _complex_message(gi: int) -> str:
    return (
        f"param group {gi}: complex parameters need tau=None: the clip's σ₁ is estimated for "
        "real tensors only; put them in a group with tau=None"
    )


def _clip_settings(group: dict[str, Any]) -> tuple[Any, ...]:
    """The param-group values a rule is built from, in :func:`clip_rule`'s order."""
    return group["tau"], group["sigma_floor"], group["power_iters"], group["weight_iters"]


def _group_clip(gi: int, group: dict[str, Any]) -> _GroupClip:
    settings = _clip_settings(group)
    try:
        return settings, clip_rule(*settings)
    except ValueError as err:
        raise ValueError(f"param group {gi}: {err}") from None


class SpectrallyClippedOptimizer(torch.optim.Optimizer):
    """Base for optimizers whose per-tensor step is scaled by :class:`WeylClip`.

    Subclasses ask :meth:`_rule` for a group's rule (``None``: the clip is off, take the base
    optimizer's own step and :meth:`_record_unclipped`), else compute an update direction
    ``D`` per tensor (their base optimizer's step divided by the LR) and call
    :meth:`_clipped_lrs`; the σ₁ machinery, the state vectors, the record and its report live
    here once. Param groups accept ``param_names`` (as torch's named-parameter support and
    :func:`weyl.optim.build_optimizer` set them); names default to ``g{group}.p{index}``.

    Each group's rule is built and validated once: when the group is added and when a state
    dict is loaded. A schedule may still change ``group["tau"]`` (or ``sigma_floor``,
    ``power_iters``) between steps: the next step sees the new value (a tuple comparison per
    group and step) and rebuilds that group's rule.

    The torch contract kept here: a group that fails validation is not added; deepcopy and
    pickle carry the instance settings torch's ``__getstate__`` drops (``_INSTANCE_SETTINGS``);
    a loaded state dict may come from ``torch.optim.AdamW``/``SGD`` (missing keys take this
    optimizer's defaults; a float ``step`` becomes a tensor, as torch converts it) but must
    not ask for maths not implemented here (``amsgrad``, ``maximize``, Adam's coupled decay).
    Complex parameters train only with the clip off (σ₁ of a complex matrix is not estimated).
    """

    # Attributes set by a subclass's constructor outside the param groups, with the value an
    # object unpickled from an older version takes.
    _INSTANCE_SETTINGS: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._group_clips: list[_GroupClip] = []  # torch's __init__ calls add_param_group
        self._check_group(defaults)  # constructor arguments, reported without a group number
        super().__init__(params, defaults)
        self._records: dict[tuple[int, str], tuple[list[str], Tensor]] = {}

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate a group's base-optimizer values, normalising them in place (subclasses)."""

    def _validated_clip(self, gi: int, group: dict[str, Any]) -> _GroupClip:
        """The group's values checked and its rule built; ValueError names the group."""
        try:
            self._check_group(group)
        except ValueError as err:
            raise ValueError(f"param group {gi}: {err}") from None
        clip = _group_clip(gi, group)
        if clip[1] is not None and any(torch.is_complex(p) for p in group["params"]):
            raise ValueError(_complex_message(gi))
        return clip

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's add_param_group, then the group validated; a rejected group is taken out."""
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        try:
            clip = self._validated_clip(gi, self.param_groups[gi])
        except ValueError:
            self.param_groups.pop()
            raise
        self._group_clips.append(clip)

    def __getstate__(self) -> dict[str, Any]:
        """torch's pickled fields, plus the instance settings and the last step's record."""
        state = super().__getstate__()
        for key in self._INSTANCE_SETTINGS:
            state[key] = getattr(self, key)
        state["_records"] = self.__dict__.get("_records", {})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """torch's ``__setstate__`` (unpickling, and the end of ``load_state_dict``), then the
        groups completed with this optimizer's defaults and every group's rule rebuilt."""
        super().__setstate__(state)
        for key, value in self._INSTANCE_SETTINGS.items():
            self.__dict__.setdefault(key, value)
        self.__dict__.setdefault("_records", {})
        for group in self.param_groups:
            # A torch.optim.AdamW/SGD state dict has no tau, sigma_floor, power_iters.
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                st = self.state.get(p)
                if st and "step" in st and not torch.is_tensor(st["step"]):
                    # Older torch and other tools save a float step; torch's Adam converts it.
                    st["step"] = torch.tensor(float(st["step"]))
        self._group_clips = [_group_clip(gi, g) for gi, g in enumerate(self.param_groups)]

    def _rule(self, gi: int, group: dict[str, Any]) -> WeylClip | None:
        """Group ``gi``'s rule (``None``: clip off), rebuilt only when its settings changed."""
        settings, rule = self._group_clips[gi]
        if _clip_settings(group) != settings:
            self._group_clips[gi] = _group_clip(gi, group)
            settings, rule = self._group_clips[gi]
        return rule

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step over every parameter that has a gradient, bucketed by device."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            by_device: dict[torch.device, list[int]] = defaultdict(list)
            has_complex = False
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
                has_complex |= torch.is_complex(p)
                by_device[local_tensor(p).device].append(pi)
            if not by_device:
                continue
            rule = self._rule(gi, group)
            if has_complex and rule is not None:  # τ switched on by a schedule since the check
                raise ValueError(_complex_message(gi))
            for indices in by_device.values():
                self._step_bucket(gi, group, rule, indices)
        return loss

    def _step_bucket(
        self, gi: int, group: dict[str, Any], rule: WeylClip | None, indices: list[int]
    ) -> None:
        """Update ``group["params"][i]`` for ``i`` in ``indices`` (all on one device)."""
        raise NotImplementedError

    def _workspace(self, gi: int, like: list[Tensor], keep: bool = True) -> MatrixWorkspace:
        """Group ``gi``'s workspace with slots ``[D_0..D_{n−1}, W_0..W_{n−1}]`` shaped as
        ``like`` (batched path: the update directions and a copy of the weights, read in place
        by the estimator); kept between steps when ``keep``, rebuilt when shapes change. Not in
        the state dict."""
        from weyl.optim.matrix_workspace import MatrixWorkspace

        shapes = tuple(t.shape for t in like) * 2
        dtypes = tuple(t.dtype for t in like) * 2
        device = like[0].device
        kept = self.__dict__.setdefault("_workspaces", {})
        ws = kept.get((gi, device))
        if ws is None or ws.signature() != (shapes, dtypes, device):
            ws = MatrixWorkspace(shapes, dtypes, device)
            if keep:
                kept[(gi, device)] = ws
        return ws

    @staticmethod
    def _name(group: dict[str, Any], gi: int, pi: int) -> str:
        names = group.get("param_names")
        return names[pi] if names is not None else f"g{gi}.p{pi}"

    def _record_unclipped(
        self, gi: int, group: dict[str, Any], indices: list[int], device: torch.device
    ) -> None:
        """Record a step of a group with the clip off: α_eff = α, never clipped, no σ̂."""
        lr = float(group["lr"])
        rec = torch.full((len(_REPORT_ROWS), len(indices)), math.nan, dtype=torch.float64)
        rec[0] = lr
        rec[1] = lr
        rec[2] = 0.0
        rec[3] = 0.0
        names = [self._name(group, gi, pi) for pi in indices]
        self._records[(gi, str(device))] = (names, rec)

    def _clipped_lrs(
        self,
        rule: WeylClip,
        gi: int,
        group: dict[str, Any],
        indices: list[int],
        params: list[Tensor],
        weights: list[Tensor],
        directions: list[Tensor],
        direction_scale: float | None,
        layouts: list[ShardLayout],
        workspace: MatrixWorkspace | None = None,
        prepare: Callable[[int, int, int | None], None] | None = None,
    ) -> Tensor:
        """Per-tensor α_eff (fp32, on the params' device) for this step, recorded.

        ``weights``/``directions`` are local tensors (shards under FSDP2); the true update
        direction is ``direction_scale · directions[i]`` (the scale lets AdamW² fold its weight
        decay in without an extra pass over the tensors). ``workspace``, ``prepare``: see
        :meth:`WeylClip.estimate`.
        """
        lr = group["lr"]
        names = [self._name(group, gi, pi) for pi in indices]
        device = weights[0].device
        # Only matrices keep state here (their vectors): a parameter with nothing to keep gets
        # no entry, as torch leaves none for SGD without momentum.
        states = [
            self.state[p] if matrix_shape(lay.shape) is not None and math.prod(lay.shape) else {}
            for p, lay in zip(params, layouts)
        ]
        seeds = [f"{gi}.{pi}.{tuple(lay.shape)}" for pi, lay in zip(indices, layouts)]
        sig_w, sig_u = rule.estimate(
            weights, directions, layouts, states, seeds, workspace, prepare
        )
        if direction_scale is not None:
            sig_u = sig_u * direction_scale
        lr_eff, fired = rule.effective_lr(lr, sig_w, sig_u)
        floored = sig_w < rule.sigma_floor  # the rule measured against the floor, not σ̂₁(W)
        # float64 so that the scheduled LR reads back exactly as the scheduler set it; the other
        # rows are converted in one kernel, not one per row.
        rec = torch.empty(len(_REPORT_ROWS), len(names), dtype=torch.float64, device=device)
        rec[0] = float(lr)
        rec[1:] = torch.stack([lr_eff, fired, floored.float(), sig_w, sig_u])
        self._records[(gi, str(device))] = (names, rec)
        return lr_eff

    def lr_report(self) -> dict[str, dict[str, float]]:
        """Last step's ``{name: {lr, lr_eff, clipped, floored, sigma_weight, sigma_update}}``.

        One host transfer. ``clipped`` is 1.0 where the clip fired, ``floored`` 1.0 where
        σ̂₁(W) < sigma_floor (the rule used the floor); σ̂ are NaN in groups with the clip off.
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

    def floored_count(self) -> int:
        """How many tensors the last step measured against ``sigma_floor`` (0 before any step)."""
        return int(sum(r["floored"] for r in self.lr_report().values()))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict, checked first and keeping the power-iteration vectors fp32.

        Every saved group, completed with this optimizer's defaults, must pass the checks of
        :meth:`add_param_group` and ask for no maths this optimizer lacks; otherwise nothing is
        loaded. torch casts every floating state tensor to its parameter's dtype; a bf16 copy
        of a singular vector would make a resumed run diverge from the uninterrupted one.
        """
        saved_groups = state_dict["param_groups"]
        for gi, (saved, own) in enumerate(zip(saved_groups, self.param_groups)):
            group = {**self.defaults, **saved, "params": own["params"]}
            for flag, value in _FOREIGN_FLAGS.items():
                if group.get(flag, value) != value:
                    raise ValueError(
                        f"param group {gi}: the state dict asks for {flag}={group[flag]}, "
                        f"which {type(self).__name__} does not implement; load it into "
                        f"torch's optimizer or save it with {flag}={value}"
                    )
            if not group.get("decoupled_weight_decay", True) and group["weight_decay"] != 0:
                raise ValueError(
                    f"param group {gi}: the state dict is torch.optim.Adam's with L2 weight decay "
                    f"(decoupled_weight_decay=False); {type(self).__name__} decays decoupled: "
                    "load an AdamW state dict or set its weight_decay to 0"
                )
            self._validated_clip(gi, group)
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
