"""The atlas's grid: methods × peak LRs × widths × seeds, and the overrides of each run.

Every run of an atlas is an ordinary ``weyl train`` run in ``<out>/runs/<name>``, its name
``<method>_w<width>_lr<lr>_s<seed>`` with the LR written as OmegaConf writes a float (so the
Hydra path, whose ``hydra.sweep.subdir`` interpolates ``${optim.lr}``, lands in the same folder).

What every run shares, whatever its method (the fairness of the comparison):
- the recipe (model, data and its order, batch, betas, weight decay, seed per grid seed);
- the step budget, the cosine schedule's shape and its floor ``schedule.min_lr``: one absolute
  value for the whole grid (1e-5, Wortsman et al.'s, or a tenth of the smallest LR when the grid
  goes lower), so a run's config does not depend on which other LRs the grid holds;
- the cadence of eval (once, at the end), checkpoints and diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from weyl.atlas.methods import METHODS, method_overrides

MIN_LR = 1.0e-5


def lr_text(lr: float) -> str:
    """A peak LR as OmegaConf renders a float (``0.003``, ``1e-05``): run names use it."""
    return str(float(lr))


@dataclass(frozen=True)
class RunPoint:
    """One run of the grid."""

    method: str
    width: int
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}_w{self.width}_lr{lr_text(self.lr)}_s{self.seed}"


@dataclass
class AtlasGrid:
    """The grid of one atlas and the overrides it gives each run."""

    recipe: str
    methods: list[str]
    lrs: list[float]
    widths: list[int]
    seeds: list[int]
    steps: int
    extra: list[str] = field(default_factory=list)  # the user's key=value, applied last

    def __post_init__(self) -> None:
        for key, values in (
            ("--methods", self.methods),
            ("--lrs", self.lrs),
            ("--widths", self.widths),
            ("--seeds", self.seeds),
        ):
            if not values:
                raise ValueError(f"{key}: give at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: a value is repeated ({values})")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(
                f"--methods: unknown {', '.join(unknown)}; choose from: {', '.join(METHODS)}"
            )
        if any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"--lrs: every peak LR must be > 0 ({self.lrs})")
        if any(w <= 0 for w in self.widths):
            raise ValueError(f"--widths: every width must be > 0 ({self.widths})")
        if self.steps < 10:
            raise ValueError(f"--steps {self.steps}: an atlas run needs at least 10 steps")

    @property
    def min_lr(self) -> float:
        """The schedule's floor, the same for every run of the grid."""
        return min(MIN_LR, min(self.lrs) / 10)

    def points(self) -> list[RunPoint]:
        """Every run, the widest first (the longest runs start first when runs share cores)."""
        return [
            RunPoint(method, width, float(lr), seed)
            for width in sorted(self.widths, reverse=True)
            for lr in self.lrs
            for method in self.methods
            for seed in self.seeds
        ]

    def shared_overrides(self) -> list[str]:
        """What every run of the grid gets, whatever its method, LR, width and seed."""
        steps = self.steps
        return [
            f"recipe={self.recipe}",
            f"trainer.max_steps={steps}",
            "trainer.epochs=0.0",
            f"trainer.eval_every={steps}",
            f"trainer.ckpt_every={max(1, steps // 4)}",
            "schedule.decay_steps=null",
            f"schedule.min_lr={self.min_lr}",
            f"diagnostics.every={max(10, steps // 6)}",
            "diagnostics.attention_maps_every=0",
            "logger.progress=false",
        ]

    def run_overrides(self, point: RunPoint, runs_dir: Path) -> list[str]:
        """The ``weyl train`` overrides of one run (the user's extra overrides last: they win)."""
        return [
            *self.shared_overrides(),
            *method_overrides(point.method, self.steps),
            f"name={point.name}",
            f"run_dir={runs_dir / point.name}",
            f"optim.lr={lr_text(point.lr)}",
            f"model.n_embd={point.width}",
            f"seed={point.seed}",
            *self.extra,
        ]

    def sweep_overrides(self, method: str, runs_dir: Path) -> list[str]:
        """One Hydra multirun over this method's LRs × widths × seeds, into the same run folders
        as :meth:`run_overrides` (``weyl train -m``: the path to a cluster launcher)."""
        return [
            *self.shared_overrides(),
            *method_overrides(method, self.steps),
            f"name={method}_w${{model.n_embd}}_lr${{optim.lr}}_s${{seed}}",  # = RunPoint.name
            f"hydra.sweep.dir={runs_dir}",
            "hydra.sweep.subdir=${name}",
            f"optim.lr={','.join(lr_text(lr) for lr in self.lrs)}",
            f"model.n_embd={','.join(str(w) for w in sorted(self.widths, reverse=True))}",
            f"seed={','.join(str(s) for s in self.seeds)}",
            *self.extra,
        ]
