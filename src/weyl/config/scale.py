"""The ``scale`` config group applied to a composed config: a recipe at another size.

``configs/scale/toy.yaml`` sets the keys every family shares directly (batch, eval, logging,
diagnostics cost) and puts the rest under a top-level ``scale:`` node, because model and data
keys differ per family (``n_embd`` vs ``embed_dim``, ``block_size`` vs ``img_size``):

- ``scale.model.<family>`` / ``scale.data.<kind>``: keys that replace the recipe's model / data
  keys for that family / kind;
- ``scale.steps``: the run's length. The warmup keeps its fraction of the recipe's run
  (``warmup_steps / max_steps`` or ``warmup_epochs / epochs``), rounded up so a recipe with
  warmup keeps some; epoch-based recipes become step-based, since a toy data set has no
  meaningful epoch. ``schedule.decay_steps`` keeps its ratio to the run's length (GPT-L stops
  at 1/6 of its decay at toy size too).

:func:`apply_scale` turns the node into those plain keys and removes it, so the validated
config and the run's saved ``config.yaml`` hold the sizes that actually ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from weyl.value_checks import ConfigError

SCALE_KEY = "scale"
SCALE_KEYS = ("name", "steps", "model", "data")


def _section(plain: dict[str, Any], name: str) -> dict[str, Any]:
    value = plain.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping of keys, got {value!r}")
    return value


def _preset(spec: Mapping[str, Any], group: str, choice: Any) -> dict[str, Any]:
    presets = spec.get(group) or {}
    if choice not in presets:
        raise ConfigError(
            f"scale.{group}: no preset for {group} '{choice}'; "
            f"add scale.{group}.{choice} (has: {', '.join(presets) or 'none'})"
        )
    return dict(presets[choice] or {})


def scaled_warmup(schedule: Mapping[str, Any], trainer: Mapping[str, Any], steps: int) -> int:
    """Warmup steps of a ``steps``-long run that keep the recipe's warmup fraction."""
    warmup_steps = int(schedule.get("warmup_steps") or 0)
    warmup_epochs = float(schedule.get("warmup_epochs") or 0.0)
    epochs = float(trainer.get("epochs") or 0.0)
    if epochs > 0:
        if warmup_steps:
            raise ConfigError(
                "schedule.warmup_steps: an epoch-based recipe (trainer.epochs > 0) with a warmup "
                "in steps has no known warmup fraction; give it in schedule.warmup_epochs"
            )
        fraction = warmup_epochs / epochs
    else:
        max_steps = int(trainer.get("max_steps") or 0)
        fraction = warmup_steps / max_steps if max_steps > 0 else 0.0
    if fraction <= 0:
        return 0
    # Rounded up (a warmup recipe keeps a warmup) but shorter than the run, as the schedule needs.
    return min(steps - 1, math.ceil(fraction * steps))


def scaled_decay(schedule: Mapping[str, Any], trainer: Mapping[str, Any], steps: int) -> int | None:
    """``schedule.decay_steps`` of a ``steps``-long run that keeps its ratio to the run's length
    ("train for N, decay over M"); None (the run's length) stays None."""
    decay_steps = schedule.get("decay_steps")
    if decay_steps is None:
        return None
    max_steps = int(trainer.get("max_steps") or 0)
    if float(trainer.get("epochs") or 0.0) > 0 or max_steps <= 0:
        raise ConfigError(
            "schedule.decay_steps: an epoch-based recipe has no known decay fraction; "
            "set schedule.decay_steps=null or give the run in trainer.max_steps"
        )
    return max(1, round(int(decay_steps) / max_steps * steps))


def apply_scale(plain: dict[str, Any]) -> dict[str, Any]:
    """Apply and remove the ``scale`` node of a resolved config (unchanged when absent)."""
    spec = plain.pop(SCALE_KEY, None)
    if spec is None:
        return plain
    if not isinstance(spec, Mapping):
        raise ConfigError(f"scale: expected a mapping of keys, got {spec!r}")
    unknown = sorted(set(spec) - set(SCALE_KEYS))
    if unknown:
        raise ConfigError(f"scale.{unknown[0]}: unknown key; allowed keys: {', '.join(SCALE_KEYS)}")
    model, data = _section(plain, "model"), _section(plain, "data")
    trainer, schedule = _section(plain, "trainer"), _section(plain, "schedule")
    model.update(_preset(spec, "model", model.get("family")))
    data.update(_preset(spec, "data", data.get("kind")))
    steps = spec.get("steps")
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"scale.steps: must be an integer >= 1, got {steps!r}")
        warmup = scaled_warmup(schedule, trainer, steps)
        decay = scaled_decay(schedule, trainer, steps)
        if decay is not None and schedule.get("warmup_shape") != "overlap":
            decay = max(decay, warmup + 1)  # the decay starts after the warmup
        trainer.update(max_steps=steps, epochs=0.0)
        schedule.update(warmup_steps=warmup, warmup_epochs=0.0)
        if "decay_steps" in schedule:
            schedule.update(decay_steps=decay)
    name = spec.get("name")
    wandb = plain.get("logger", {}).get("wandb")
    if name and isinstance(wandb, dict):
        # Toy runs of a recipe share its wandb group; the tag keeps them apart.
        wandb["tags"] = [*(wandb.get("tags") or []), f"scale-{name}"]
    return plain
