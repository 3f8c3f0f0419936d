"""The optimizer's config, checked when it is built (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from weyl.value_checks import one_of, require


class OptimizerName(StrEnum):
    """``adamw`` (torch), ``adamw2`` (Algorithm 1), ``sgd`` (SGD-momentum with decoupled
    weight decay: SGDW² with the clip off), ``sgdw2`` (the same with the spectral LR clip),
    and the other warmup-free stabilizers: ``radam`` (torch, decoupled decay), ``gi_adam``
    (AdamW with v₀ = g₀²), ``stable_adamw`` (AdamW with AdaFactor's update clipping) and
    ``muon`` (torch's Muon on hidden matrices, AdamW on the rest)."""

    adamw = "adamw"
    adamw2 = "adamw2"
    sgd = "sgd"
    sgdw2 = "sgdw2"
    radam = "radam"
    gi_adam = "gi_adam"
    stable_adamw = "stable_adamw"
    muon = "muon"


class MuonLRAdjust(StrEnum):
    """torch.optim.Muon's ``adjust_lr_fn``: ``match_rms_adamw`` scales the update to AdamW's
    RMS (0.2·√max(m, n)) so AdamW's LR and decay carry over; ``original`` is Keller Jordan's
    √max(1, m/n)."""

    match_rms_adamw = "match_rms_adamw"
    original = "original"


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adamw2
    lr: float = 6e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    # AdamW² threshold on lr·σ₁(ΔW)/σ₁(W); null disables the clip.
    tau: float | None = 0.01
    # σ̂₁ estimator (weyl.optim.spectral_norm): warm-started Golub–Kahan–Lanczos steps per
    # optimizer step on ΔW (its top direction moves; 3 = the paper's maximum) and on W_{t−1}.
    power_iters: int = 3
    weight_iters: int = 1
    # σ₁(W) below this counts as this in the clip, so zero-initialised tensors can move; 0 is
    # the literal Algorithm 1 (such tensors never train). A documented deviation.
    sigma_floor: float = 1e-2
    momentum: float = 0.9
    # Muon (optim.name=muon): momentum of its hidden-matrix group and its LR convention.
    muon_momentum: float = 0.95
    muon_adjust_lr: MuonLRAdjust = MuonLRAdjust.match_rms_adamw

    def __post_init__(self) -> None:
        self.name = one_of(OptimizerName, self.name, "optim.name")
        require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        betas = list(self.betas)
        require(len(betas) == 2, "optim.betas", f"needs two values [beta1, beta2], got {betas}")
        require(
            all(0.0 <= b < 1.0 for b in betas),
            "optim.betas",
            f"each must be in [0, 1), got {betas}",
        )
        require(self.eps > 0, "optim.eps", f"must be > 0, got {self.eps}")
        require(
            self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}"
        )
        require(
            self.tau is None or self.tau > 0,
            "optim.tau",
            f"must be > 0 (or null to disable the clip), got {self.tau}",
        )
        require(self.power_iters >= 1, "optim.power_iters", f"must be >= 1, got {self.power_iters}")
        require(
            self.weight_iters >= 1, "optim.weight_iters", f"must be >= 1, got {self.weight_iters}"
        )
        require(
            self.sigma_floor >= 0,
            "optim.sigma_floor",
            f"must be >= 0 (0: the literal Algorithm 1), got {self.sigma_floor}",
        )
        require(
            0.0 <= self.momentum < 1.0, "optim.momentum", f"must be in [0, 1), got {self.momentum}"
        )
        require(
            0.0 <= self.muon_momentum < 1.0,
            "optim.muon_momentum",
            f"must be in [0, 1), got {self.muon_momentum}",
        )
        self.muon_adjust_lr = one_of(MuonLRAdjust, self.muon_adjust_lr, "optim.muon_adjust_lr")
