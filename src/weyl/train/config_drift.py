"""Which config keys change a run's trajectory, and how a relaunch compares with its run dir.

A run directory holds one training run. Relaunching into it continues that run, which is only
honest when everything that shapes the sequence of updates is the same as before: model, data,
optimizer, schedule, step budget, batch, seed, precision. Keys that only change what is
*observed* (how often to log, evaluate, checkpoint or run diagnostics, which loggers) may
differ; they are listed here, in one place, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Dotted keys (or whole sections ending in ".") that may change between launches of one run.
OBSERVATION_KEYS: tuple[str, ...] = (
    "name",
    "run_dir",
    "logger.",
    "diagnostics.",
    "trainer.log_every",
    "trainer.eval_every",
    "trainer.eval_batches",
    "trainer.ckpt_every",
    "trainer.keep_last",
    "trainer.checkpoint_async",
    "trainer.resume",
    "trainer.requeue",
)

_ABSENT = "<absent>"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def is_observation_key(dotted: str) -> bool:
    """True when ``dotted`` may differ between launches without changing the trajectory."""
    return any(
        dotted.startswith(key) if key.endswith(".") else dotted == key for key in OBSERVATION_KEYS
    )


def trajectory_changes(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every trajectory key that differs."""
    before, after = flatten(old), flatten(new)
    changes = {}
    for key in sorted(before.keys() | after.keys()):
        if is_observation_key(key):
            continue
        a, b = before.get(key, _ABSENT), after.get(key, _ABSENT)
        if a != b:
            changes[key] = (a, b)
    return changes


def describe_changes(changes: Mapping[str, tuple[Any, Any]], limit: int = 4) -> str:
    """``optim.lr 0.01 → 0.005, trainer.max_steps 300 → 1000`` (first ``limit``, then a count)."""
    parts = [f"{key} {a} → {b}" for key, (a, b) in list(changes.items())[:limit]]
    if len(changes) > limit:
        parts.append(f"and {len(changes) - limit} more")
    return ", ".join(parts)
