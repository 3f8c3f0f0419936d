"""Every recipe run resolves to the config committed in tests/recipes/resolved/, key by key.

The fixtures were written from the recipes as they were before they composed (one full file per
run); the recipes may be reorganised in any way as long as each old ``recipe=<name>``, at both
scales and for each job of its sweep, validates to the same values. Only the run's names may
differ: see :data:`IGNORED_KEYS`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.recipes.composition import METHODS, base_recipes, composed, named_run
from tests.recipes.resolved_configs import (
    IGNORED_KEYS,
    leaves,
    load_fixture,
    runs,
    snapshot_recipes,
)

RECIPES = snapshot_recipes()
RUNS = [(recipe, run_id) for recipe in RECIPES for run_id in load_fixture(recipe)]
# (base, method, the named run it equals): each cell of Table 1 / the appendix / the CPU demo as
# one `recipe=<base> method=<method>` command.
CELLS = [
    (base, method, run)
    for base in base_recipes()
    for method in METHODS
    if (run := named_run(base, method)) is not None
]


def config_diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """One line per key that differs, is missing or is new (ignored keys aside)."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if key in IGNORED_KEYS:
            continue
        if key not in actual:
            lines.append(f"  {key}: missing (was {expected[key]!r})")
        elif key not in expected:
            lines.append(f"  {key}: new key = {actual[key]!r}")
        elif actual[key] != expected[key] or type(actual[key]) is not type(expected[key]):
            lines.append(f"  {key}: {actual[key]!r}, was {expected[key]!r}")
    return lines


def resolved_leaves(*overrides: str) -> dict[str, Any]:
    import dataclasses

    return leaves(json.loads(json.dumps(dataclasses.asdict(composed(*overrides)))))


def test_every_fixture_recipe_is_snapshotted() -> None:
    # 22 Table 1 runs (2 of them the nanoGPT-init pair), 9 appendix runs, 2 τ sweeps, 4 CPU demo
    # runs, 1 smoke run, the GPT-2 S atlas.
    groups = [r.split("/")[0] for r in RECIPES]
    counts = {g: groups.count(g) for g in set(groups)}
    assert counts == {"table1": 22, "appendix": 9, "ablation": 2, "cpu": 4, "smoke": 1, "atlas": 1}
    assert len(load_fixture("ablation/gpt2_s_tau")) == 2 * 4  # both scales × 4 τ
    assert len(load_fixture("ablation/swin_s_tau")) == 2 * 5


@pytest.mark.parametrize(("recipe", "run_id"), RUNS, ids=[f"{r}[{i}]" for r, i in RUNS])
def test_recipe_resolves_to_its_snapshot(recipe: str, run_id: str) -> None:
    overrides = runs(recipe).get(run_id)
    assert overrides is not None, (
        f"{recipe}: the run '{run_id}' of the snapshot is no longer a run of the recipe "
        f"(its sweep changed); runs now: {sorted(runs(recipe))}"
    )
    diff = config_diff(load_fixture(recipe)[run_id], resolved_leaves(*overrides))
    assert not diff, (
        f"recipe={recipe} {run_id} resolves differently from tests/recipes/resolved/"
        f"{recipe}.json:\n" + "\n".join(diff)
    )


def test_every_named_method_run_is_a_base_and_a_method() -> None:
    # 20 Table 1 cells, 9 appendix runs, 4 CPU demo runs.
    assert len(CELLS) == 33
    assert {run for _, _, run in CELLS} <= set(RECIPES)


@pytest.mark.parametrize("scale", ["scale=full", "scale=toy"])
@pytest.mark.parametrize(("base", "method", "run"), CELLS, ids=[c[2] for c in CELLS])
def test_base_with_method_is_the_named_run(base: str, method: str, run: str, scale: str) -> None:
    """`weyl train recipe=<base> method=<method>` runs exactly the snapshot of the named run."""
    actual = resolved_leaves(f"recipe={base}", f"method={method}", scale)
    diff = config_diff(load_fixture(run)[scale], actual)
    assert not diff, f"recipe={base} method={method} {scale} differs from {run}:\n" + "\n".join(
        diff
    )
