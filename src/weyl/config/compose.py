"""Compose ``configs/`` + a recipe with Hydra and validate the result.

The config tree lives at the repository top (``configs/``, ``recipes/``); ``configs/recipe``
is a link to ``recipes/`` so that ``recipe=<path>`` selects one file there. Hydra's own
errors (a missing recipe, an override of a key that does not exist) are rewritten into the
same one-line :class:`ConfigError` as schema errors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from weyl.config.scale import apply_scale
from weyl.config.schema import TrainConfig
from weyl.config.validate import ConfigError, validate

PRIMARY_CONFIG = "train"
# The selectable config groups of configs/ (recipe links to recipes/).
CONFIG_GROUPS = (
    "recipe",
    "scale",
    "model",
    "data",
    "optim",
    "schedule",
    "trainer",
    "logger",
    "diagnostics",
)


def config_dir() -> Path:
    """Directory holding ``train.yaml`` and the config groups."""
    here = Path(__file__).resolve()
    for root in (here.parents[3], here.parents[1]):  # source checkout, then installed copy
        candidate = root / "configs"
        if (candidate / f"{PRIMARY_CONFIG}.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"configs/{PRIMARY_CONFIG}.yaml not found next to {here}; reinstall weyl with `pip install -e .`"
    )


def recipes_dir() -> Path:
    """Directory of the recipe files (``recipe=<path relative to it>``)."""
    return (config_dir() / "recipe").resolve()


def available_options(group: str) -> list[str]:
    """Names selectable for a config group (recursively for ``recipe``)."""
    base = config_dir() / group
    return sorted(str(p.relative_to(base).with_suffix("")) for p in base.rglob("*.yaml"))


def _allowed_keys(dotted: str) -> str:
    """The keys a section accepts, for error messages (model/data depend on their family)."""
    import dataclasses

    from weyl.config.validate import SECTIONS

    schema = SECTIONS.get(dotted.split(".")[0])
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return ", ".join(f.name for f in dataclasses.fields(schema))
    return "see `weyl train --cfg job`"


def _hydra_error_to_line(exc: Exception) -> ConfigError:
    text = str(exc)
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        path = missing.group(1)
        group, _, option = path.rpartition("/")
        top = group.split("/")[0] if group else path
        if top in CONFIG_GROUPS:
            options = ", ".join(available_options(top))
            wanted = path[len(top) + 1 :] if group else option
            return ConfigError(f"{top}={wanted}: no such {top}; available: {options}")
        return ConfigError(f"{path}: config not found")
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        key = override.group(1)
        return ConfigError(f"{key}: unknown key; allowed keys: {_allowed_keys(key)}")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return ConfigError(f"config: {first}")


def compose_raw(overrides: list[str]) -> DictConfig:
    """Compose the primary config with Hydra's compose API (no run, no output dirs)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose(PRIMARY_CONFIG, overrides=overrides, return_hydra_config=False)
    except HydraException as exc:
        raise _hydra_error_to_line(exc) from None


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations, drop Hydra's own node and apply ``scale`` (see weyl.config.scale).

    Interpolation errors become one line.
    """
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # omegaconf raises several unrelated types here
        key = getattr(exc, "full_key", "") or "config"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
    assert isinstance(plain, dict)
    return apply_scale(plain)


def load_config(overrides: list[str]) -> TrainConfig:
    """Compose and validate: the typed config a run would get from these overrides."""
    return validate(to_plain(compose_raw(overrides)))
