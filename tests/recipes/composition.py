"""One cached composition per set of overrides, and the recipe catalogue the recipe tests share.

The recipe files are of three kinds (recipes/README.md, "How recipes compose"), told apart by
their own defaults list:

- a *column* (``table2/<family>``): Table 2's values shared by a family, included by bases;
  not a run by itself;
- a *base* (``table1/vit_b``, ``cpu/gpt_cpu``, ...): one model, run with any ``method=``;
- a *named run* (``table1/vit_b_adamw2``, ``ablation/gpt2_s_tau``, ``smoke/gpt_tiny``): a base
  with its method fixed (``override /method``), or a recipe that uses no method at all.
"""

from __future__ import annotations

from functools import cache

import yaml

from weyl.config import TrainConfig
from weyl.config.compose import config_dir, load_config, recipes_dir

RECIPES = recipes_dir()
METHODS = tuple(sorted(p.stem for p in (config_dir() / "method").glob("*.yaml")))
COLUMN_DIR = "table2"
_INCLUDE = "/recipe/"
_METHOD = "override /method"


@cache
def composed(*overrides: str) -> TrainConfig:
    """``load_config(overrides)``, composed once per session (Hydra dominates the test time)."""
    return load_config(list(overrides))


@cache
def _defaults(recipe: str) -> tuple[list[str], str | None]:
    """(recipes the file includes, the method it selects itself or None)."""
    text = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text()) or {}
    includes, method = [], None
    for entry in text.get("defaults", []):
        if isinstance(entry, str) and entry.startswith(_INCLUDE):
            includes.append(entry.removeprefix(_INCLUDE))
        elif isinstance(entry, dict) and _METHOD in entry:
            method = entry[_METHOD]
    return includes, method


def all_recipes() -> list[str]:
    """Every file of recipes/, as ``recipe=`` names."""
    return sorted(str(p.relative_to(RECIPES).with_suffix("")) for p in RECIPES.rglob("*.yaml"))


def is_column(recipe: str) -> bool:
    return recipe.split("/")[0] == COLUMN_DIR


def composes(recipe: str) -> tuple[str, str] | None:
    """(base, method) when the recipe is a base with its method fixed, else None."""
    includes, method = _defaults(recipe)
    bases = [r for r in includes if not is_column(r)]
    return (bases[0], method) if bases and method else None


def is_base(recipe: str) -> bool:
    """A recipe that takes ``method=`` (it includes a column or a base, or picks a default)."""
    includes, method = _defaults(recipe)
    return not is_column(recipe) and composes(recipe) is None and bool(includes or method)


def named_runs() -> list[str]:
    """The named runs: every recipe that is neither a column nor a base."""
    return [r for r in all_recipes() if not is_column(r) and not is_base(r)]


def base_recipes() -> list[str]:
    return [r for r in all_recipes() if is_base(r)]


def default_method(recipe: str) -> str:
    """The method a base runs without ``method=`` (its own default, else its base's)."""
    includes, method = _defaults(recipe)
    if method:
        return method
    (base,) = [r for r in includes if not is_column(r)]
    return default_method(base)


def named_run(base: str, method: str) -> str | None:
    """The named run that is exactly ``recipe=<base> method=<method>``, if there is one."""
    for recipe in named_runs():
        if composes(recipe) == (base, method) and set(_body(recipe)) <= {"name"}:
            return recipe
    return None


def _body(recipe: str) -> dict:
    text = yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text()) or {}
    return {k: v for k, v in text.items() if k != "defaults"}
