"""Start one run: the single path that ``weyl train``, ``weyl demo`` (and sweeps) go through.

``start_run`` takes the composed, resolved config as plain data and does, in order, what every
launch must do: validate, check that a relaunch into an existing run directory continues the
*same* run (see :mod:`weyl.train.config_drift`), record the run directory, train, and return the
run summary. Keeping it in one place means a rule about starting runs holds for every command.

``trainer.resume`` decides what happens to a run directory that already holds a run:

- ``auto``: continue from its newest checkpoint, only when every trajectory key is unchanged;
  otherwise stop before touching anything, naming the keys that differ;
- ``force``: continue even though trajectory keys changed (e.g. a larger ``max_steps``); the
  change is recorded as a ``config_changed`` event in ``metrics.jsonl``;
- ``never``: start from step 0; the previous run is moved aside to ``<run_dir>.old-<time>``,
  never deleted;
- a checkpoint path: start from that checkpoint (a deliberate choice; nothing is compared).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from weyl.config.validate import ConfigError, validate
from weyl.train.config_drift import describe_changes, trajectory_changes

log = logging.getLogger(__name__)

# What a run directory holds that belongs to the run (moved aside together by resume=never).
_RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "status.json")


class RunConfigChanged(ConfigError):
    """A relaunch into a run directory whose run has a different trajectory config."""

    def __init__(self, run_dir: Path, changes: dict[str, tuple[Any, Any]]) -> None:
        self.run_dir = run_dir
        self.changes = changes
        super().__init__(
            f"run_dir {run_dir} holds a run with a different config ({describe_changes(changes)});"
            " choose a new name=/run_dir=, trainer.resume=never to start fresh (the old run is"
            " moved aside, not deleted), or trainer.resume=force to continue it under the new"
            " config"
        )


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def has_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds results of an earlier launch (checkpoints or metrics)."""
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and any(p.name.startswith("step_") for p in ckpts.iterdir()):
        return True
    metrics = run_dir / "metrics.jsonl"
    return metrics.is_file() and metrics.stat().st_size > 0


def move_run_aside(run_dir: Path) -> Path:
    """Move the run's files into ``<run_dir>.old-<time>/`` (rank 0); returns that folder."""
    target = run_dir.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        target = target.with_name(f"{run_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    target.mkdir(parents=True)
    # Entries, not the folder itself: the run directory (and a lock file in it) stays in place.
    for entry in sorted(run_dir.iterdir()):
        if not entry.name.startswith(".lock"):
            shutil.move(str(entry), target / entry.name)
    return target


def check_relaunch(run_dir: Path, plain: dict[str, Any], resume: str) -> list[dict[str, Any]]:
    """Apply ``trainer.resume`` to an existing run in ``run_dir``; returns events to log.

    Raises :class:`RunConfigChanged` when ``resume=auto`` would continue a different run.
    """
    if resume not in ("auto", "force", "never") or not run_dir.is_dir() or not has_run(run_dir):
        return []
    if resume == "never":
        if _is_main_rank():
            kept = move_run_aside(run_dir)
            print(f"weyl: trainer.resume=never: moved the previous run in {run_dir} to {kept}")
        return []
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        changes = {"config.yaml": ("<missing>", "this launch's config")}
    else:
        try:
            old = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{config_path}: not readable YAML ({exc.__class__.__name__})"
            ) from None
        changes = trajectory_changes(old, plain)
    if not changes:
        return []
    if resume == "auto":
        raise RunConfigChanged(run_dir, changes)
    if _is_main_rank():
        print(f"weyl: trainer.resume=force: continuing {run_dir} with {describe_changes(changes)}")
    return [{"event": "config_changed", "changes": {k: [a, b] for k, (a, b) in changes.items()}}]


def start_run(
    plain: dict[str, Any], argv: list[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate ``plain``, check a relaunch, prepare the run directory (rank 0) and train."""
    from weyl.train import run_training
    from weyl.train.run_dir import prepare_run_dir

    typed = validate(plain)
    events = check_relaunch(Path(typed.run_dir), plain, typed.trainer.resume)
    prepare_run_dir(typed.run_dir, plain, argv, extra=extra)
    return run_training(typed, launch_events=events)
