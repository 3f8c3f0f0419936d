"""The stability atlas's methods: name → the ``weyl train`` overrides that make the method.

This table is the one place a method of ``weyl atlas`` is defined. Each entry starts from a
method overlay of ``configs/method/`` (the optimizer, warmup or none, σReparam) and adds the
switches of one stabilizer, so every method differs from plain AdamW without warmup in exactly
the stabilizer it names: same model, data order, seed, step budget, peak LR, betas and weight
decay (the recipe's). Each method keeps its published settings:

- ``adamw_warmup``: linear warmup over 10% of the run's steps (``WARMUP_FRACTION``).
- ``adamw2``: τ from the recipe's ``method.tau``; the CPU demo's recipe uses 0.02, which the demo
  measured for a 1000-step horizon (the paper's 0.01 was chosen for 100K-600K steps).
- ``z_loss``: PaLM's coefficient 1e-4.
- ``muon``: torch.optim.Muon with ``adjust_lr_fn="match_rms_adamw"`` (``optim.muon_adjust_lr``,
  torch's documented convention for reusing AdamW's LR and weight decay), so one peak LR means
  the same for every method of the grid (:mod:`weyl.optim.muon_adamw`).
- ``stable_adamw``, ``radam``, ``gi_adam``: their optimizers' defaults (:mod:`weyl.optim`).
"""

from __future__ import annotations

from dataclasses import dataclass

WARMUP_FRACTION = 0.1  # the warmup baseline warms up over this fraction of the steps
Z_LOSS = 1.0e-4  # PaLM's z-loss coefficient

_NO_WARMUP = "method=adamw_nowarmup"


@dataclass(frozen=True)
class AtlasMethod:
    """One column of the atlas: a label for tables and figures, and its overrides."""

    name: str
    label: str
    overrides: tuple[str, ...]
    warmup: bool = False  # the overrides need the warmup length (10% of the run's steps)


METHODS: dict[str, AtlasMethod] = {
    m.name: m
    for m in (
        AtlasMethod("adamw", "AdamW, no warmup", (_NO_WARMUP,)),
        AtlasMethod("adamw_warmup", "AdamW + 10% warmup", ("method=adamw_warmup",), warmup=True),
        AtlasMethod("adamw2", "AdamW² (τ per recipe)", ("method=adamw2",)),
        AtlasMethod("qk_norm", "AdamW + QK-norm", (_NO_WARMUP, "model.qk_norm=true")),
        AtlasMethod("sigma_reparam", "AdamW + σReparam", ("method=sigma_reparam_nowarmup",)),
        AtlasMethod("z_loss", "AdamW + z-loss 1e-4", (_NO_WARMUP, f"trainer.z_loss={Z_LOSS}")),
        AtlasMethod("stable_adamw", "StableAdamW", (_NO_WARMUP, "optim=stable_adamw")),
        AtlasMethod("radam", "RAdam", (_NO_WARMUP, "optim=radam")),
        AtlasMethod("gi_adam", "GI-Adam", (_NO_WARMUP, "optim=gi_adam")),
        AtlasMethod(
            "muon",
            "Muon (+AdamW)",
            (_NO_WARMUP, "optim=muon", "optim.muon_adjust_lr=match_rms_adamw"),
        ),
    )
}


def warmup_steps(steps: int) -> int:
    """The warmup baseline's warmup length for a run of ``steps`` steps (at least 1)."""
    return max(1, round(steps * WARMUP_FRACTION))


def method_overrides(name: str, steps: int) -> list[str]:
    """The overrides of method ``name`` for a run of ``steps`` steps."""
    if name not in METHODS:
        raise ValueError(f"unknown atlas method {name!r}; choose from: {', '.join(METHODS)}")
    method = METHODS[name]
    extra = (
        [f"method.warmup_steps={warmup_steps(steps)}", "method.warmup_epochs=0.0"]
        if method.warmup
        else []
    )
    return [*method.overrides, *extra]
