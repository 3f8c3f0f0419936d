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
# The recipe's node of per-model method values (tau, warmup, ...), read by configs/method/*.yaml.
METHOD_VALUES_KEY = "method"
# The selectable config groups of configs/ (recipe links to recipes/).
CONFIG_GROUPS = (
    "recipe",
    "method",
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


GRAMMAR_URL = "https://hydra.cc/docs/advanced/override_grammar/basic"


def check_override_syntax(overrides: list[str]) -> None:
    """One-line :class:`ConfigError` for an override Hydra cannot parse (``foo``, ``=5``, ``x=[1,``).

    A bare word right after a ``key=value`` is most often the rest of a value that held a space
    (``run_dir=/tmp/a b`` unquoted in the shell), so that case gets the quoting hint.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    previous = None
    for text in overrides:
        try:
            (parsed,) = parser.parse_overrides([text])
        except HydraException as exc:
            prev_key = (previous or "").split("=", 1)[0]
            if "=" not in text and prev_key.endswith(("dir", "path", "name")):
                raise ConfigError(
                    f"override '{text}' is not key=value; if it is the rest of '{previous}' "
                    f"(a value with a space), quote the whole override: '{previous} {text}'"
                ) from None
            if "=" not in text:
                raise ConfigError(
                    f"override '{text}' is not key=value (e.g. optim.lr=1e-3); see {GRAMMAR_URL}"
                ) from None
            lines = [
                line
                for line in str(exc).splitlines()
                if "hydra.cc" not in line and not line.startswith("Error parsing override")
            ]
            detail = lines[0] if lines else "cannot be parsed"
            raise ConfigError(f"override '{text}': {detail}; see {GRAMMAR_URL}") from None
        if not parsed.key_or_group:
            raise ConfigError(
                f"override '{text}' has no key before '='; write key=value (e.g. optim.lr=5)"
            )
        previous = text


def first_job(overrides: list[str]) -> list[str]:
    """The overrides of a ``-m`` sweep's first job: each sweep (``a=1,2``) at its first value.

    Sweeps without a plain list of values (``glob(...)``) are left out.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    job = []
    for text, override in zip(overrides, parsed, strict=True):
        if not override.is_sweep_override():
            job.append(text)
            continue
        try:
            first = next(iter(override.sweep_string_iterator()))
        except Exception:  # glob and other sweeps Hydra expands only against the config tree
            continue
        job.append(f"{override.get_key_element()}={first}")
    return job


class ConfigFileError(ConfigError):
    """A config or recipe file that cannot be read (a YAML syntax error)."""


def _yaml_error_to_line(exc: Exception) -> ConfigFileError:
    """``<file>:<line>:<column>: YAML syntax error: <problem>`` from a PyYAML error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else "config"
    detail = f"{problem} ({context})" if context else problem
    return ConfigFileError(f"{where}: YAML syntax error: {detail}")


def compose_raw(overrides: list[str]) -> DictConfig:
    """Compose the primary config with Hydra's compose API (no run, no output dirs)."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    check_override_syntax(overrides)
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose(PRIMARY_CONFIG, overrides=overrides, return_hydra_config=False)
    except yaml.YAMLError as exc:
        raise _yaml_error_to_line(exc) from None
    except HydraException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, yaml.YAMLError):
            raise _yaml_error_to_line(cause) from None
        raise _hydra_error_to_line(exc) from None
    except ValueError as exc:  # Hydra's defaults list raises plain ValueErrors (e.g. model=5)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config: {first}") from None


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
    # The per-model values a method overlay read (configs/method/); resolved into the run's keys.
    plain.pop(METHOD_VALUES_KEY, None)
    return apply_scale(plain)


def load_config(overrides: list[str]) -> TrainConfig:
    """Compose and validate: the typed config a run would get from these overrides."""
    return validate(to_plain(compose_raw(overrides)))
