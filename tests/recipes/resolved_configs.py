"""The resolved config of every recipe run, as committed fixtures (tests/recipes/resolved/).

Each recipe file that existed when the recipes were rewritten to compose (base per model +
method overlay) has one ``resolved/<recipe>.json``: for each run of it (the recipe at
``scale=full`` and ``scale=toy``; for a ``-m`` recipe with Hydra sweeper params, each job of the
sweep at both scales) the validated config, ``dataclasses.asdict`` of ``load_config``, so every
defaulted key is there too. ``test_resolved_configs.py`` composes the same runs and compares
them key by key.

The fixtures record the configs of commit 135009c (before the rewrite). Regenerate them only
for a deliberate change of a recipe's values, and say so in the commit:

    PYTHONPATH=src python -m tests.recipes.resolved_configs --write            # every fixture
    PYTHONPATH=src python -m tests.recipes.resolved_configs --write table1/NEW  # a new recipe
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from weyl.config.compose import load_config

FIXTURES = Path(__file__).parent / "resolved"
SCALES = ("scale=full", "scale=toy")
# Run names may differ (a composed run is named <model>_<method>); nothing else may.
IGNORED_KEYS = ("name", "run_dir", "logger.wandb.name")


def sweep_jobs(recipe: str) -> list[list[str]]:
    """The extra overrides of each job of a ``-m`` recipe's own sweep ([[]] for a plain recipe)."""
    from weyl.config.compose import compose_raw

    cfg = compose_raw([f"recipe={recipe}"], with_hydra=True)
    params = cfg.hydra.sweeper.params or {}
    jobs: list[list[str]] = [[]]
    for key, values in params.items():  # Hydra's basic sweeper: the cartesian product
        jobs = [[*job, f"{key}={v.strip()}"] for job in jobs for v in str(values).split(",")]
    return jobs


def runs(recipe: str) -> dict[str, list[str]]:
    """{run id: overrides} of every run of one recipe (the id is the overrides after recipe=)."""
    out = {}
    for job in sweep_jobs(recipe):
        for scale in SCALES:
            overrides = [scale, *job]
            out[" ".join(overrides)] = [f"recipe={recipe}", *overrides]
    return out


def leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of a nested dict (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def resolved(overrides: list[str]) -> dict[str, Any]:
    """The validated config of a run as JSON data (tuples become lists, as in the fixtures)."""
    return json.loads(json.dumps(dataclasses.asdict(load_config(overrides))))


def load_fixture(recipe: str) -> dict[str, dict[str, Any]]:
    """{run id: {dotted key: value}} as committed."""
    return json.loads(fixture_path(recipe).read_text())


def fixture_path(recipe: str) -> Path:
    return FIXTURES / f"{recipe}.json"


def snapshot_recipes() -> list[str]:
    """The recipes that have a committed fixture."""
    return sorted(str(p.relative_to(FIXTURES).with_suffix("")) for p in FIXTURES.rglob("*.json"))


def _dump(data: dict[str, dict[str, Any]]) -> str:
    """JSON with one ``"dotted.key": value`` line per leaf (small, and diffs read key by key)."""
    blocks = []
    for run_id, config in data.items():
        lines = [
            f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in config.items()
        ]
        blocks.append(f"{json.dumps(run_id)}: {{\n" + ",\n".join(lines) + "\n}")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def write(recipes: list[str]) -> None:
    for recipe in recipes:
        data = {
            run_id: dict(sorted(leaves(resolved(overrides)).items()))
            for run_id, overrides in runs(recipe).items()
        }
        path = fixture_path(recipe)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(data))
        print(f"wrote {path} ({len(data)} runs)")


if __name__ == "__main__":
    # --write: regenerate every committed fixture; --write RECIPE...: (re)write those recipes' too.
    # Base recipes (e.g. table1/vit_b) and the shared table2/ includes are not runs of their own.
    if not sys.argv[1:] or sys.argv[1] != "--write":
        raise SystemExit("usage: python -m tests.recipes.resolved_configs --write [RECIPE ...]")
    write(sys.argv[2:] or snapshot_recipes())
