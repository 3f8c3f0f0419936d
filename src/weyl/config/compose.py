"""Compose ``configs/`` + a recipe with Hydra, type-checked by the structured configs, and validate.

The config tree lives at the repository top (``configs/``, ``recipes/``); ``configs/recipe``
is a link to ``recipes/`` so that ``recipe=<path>`` selects one file there. Hydra's own
errors (a missing recipe, an override of a key that does not exist) are rewritten into the
same one-line :class:`ConfigError` as schema errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from weyl.config.error_lines import omegaconf_error_line
from weyl.config.run_config import ComposedConfig, TrainConfig
from weyl.config.scale import apply_scale
from weyl.data.data_config import DATA_CONFIGS, data_config_class
from weyl.models.model_config import MODEL_CONFIGS, ModelConfig, model_config_class
from weyl.value_checks import ConfigError

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


def register_schemas() -> None:
    """Put the structured configs into Hydra's ConfigStore, so composing type-checks them.

    ``train_schema`` is the root (``configs/train.yaml`` extends it); ``model/<family>_schema``
    and ``data/<kind>_schema`` are the schemas that ``configs/model/*.yaml`` and
    ``configs/data/*.yaml`` extend (the root cannot type those two: they depend on the choice).
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="train_schema", node=ComposedConfig)
    for family, cls in MODEL_CONFIGS.items():
        store.store(group="model", name=f"{family}_schema", node=cls)
    for kind, cls in DATA_CONFIGS.items():
        store.store(group="data", name=f"{kind}_schema", node=cls)


def _hydra_error_to_line(exc: Exception) -> ConfigError:
    from omegaconf.errors import OmegaConfBaseException

    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OmegaConfBaseException):
        return omegaconf_error_line(cause, TrainConfig)
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


def without_hydra_overrides(overrides: list[str]) -> list[str]:
    """``overrides`` less Hydra's own (``hydra.*``, ``hydra/<group>=``): what composes a run's
    config outside Hydra's main."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/", "hydra="))]


def first_job_overrides(overrides: list[str]) -> list[str] | None:
    """The overrides of a ``-m`` sweep's first job: each sweep (``a,b``, ``range()``,
    ``choice()``) at its first value, ``hydra`` keys and groups left out. None when a sweep's
    values cannot be listed without Hydra's config loader (``glob()``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    out = []
    for parsed in OverridesParser.create().parse_overrides(without_hydra_overrides(overrides)):
        if not parsed.is_sweep_override():
            out.append(parsed.input_line)
            continue
        try:
            first = next(iter(parsed.sweep_string_iterator()))
        except (HydraException, ValueError, StopIteration):
            return None
        out.append(f"{parsed.get_key_element()}={first}")  # the key with its +/++ prefix
    return out


def check_yaml_files(overrides: list[str]) -> None:
    """Raise :class:`ConfigFileError` for a file of ``configs/`` or a recipe named in
    ``overrides`` (every value of a ``recipe=a,b`` sweep) that is not valid YAML, without
    composing anything."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    files = [
        p for p in config_dir().rglob("*.yaml") if "recipe" not in p.relative_to(config_dir()).parts
    ]
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.get_key_element().lstrip("+~") != "recipe":
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.value()]
        )
        files += [recipes_dir() / f"{v}.yaml" for v in values if isinstance(v, str)]
    for path in files:
        if path.is_file():
            try:
                with path.open() as stream:
                    yaml.safe_load(stream)
            except yaml.YAMLError as exc:
                raise _yaml_error_to_line(exc) from None


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


def compose_raw(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """Compose the primary config with Hydra's compose API (no run, no output dirs); types are
    checked against the registered schemas, values are not (see :func:`build_config`).
    ``with_hydra`` keeps Hydra's own node (``hydra.runtime.choices``: the groups chosen)."""
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    check_override_syntax(overrides)
    register_schemas()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose(PRIMARY_CONFIG, overrides=overrides, return_hydra_config=with_hydra)
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
    """Resolve interpolations, drop Hydra's own node and apply ``scale`` (see weyl.config.scale):
    the run's config as plain data, as its ``config.yaml`` records it.

    Interpolation errors become one line.
    """
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception as exc:  # omegaconf raises several unrelated types here
        key = getattr(exc, "full_key", "") or "config"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
    assert isinstance(plain, dict)
    # The per-model values a method overlay read (configs/method/); resolved into the run's keys.
    plain.pop(METHOD_VALUES_KEY, None)
    return apply_scale(plain)


def build_config(plain: dict[str, Any]) -> TrainConfig:
    """The typed config of a resolved, plain config (``to_plain``'s output, a run's
    ``config.yaml``): types checked by OmegaConf, values by each section's ``__post_init__``."""
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(plain.get("model"), dict) or not isinstance(plain.get("data"), dict):
        raise ConfigError("model, data: expected a mapping of keys each")
    schema = OmegaConf.structured(TrainConfig)
    try:
        schema.model = OmegaConf.structured(model_config_class(plain["model"].get("family")))
        schema.data = OmegaConf.structured(data_config_class(plain["data"].get("kind")))
        return OmegaConf.to_object(OmegaConf.merge(schema, plain))
    except OmegaConfBaseException as exc:
        raise omegaconf_error_line(exc, TrainConfig) from None


@dataclass
class ComposedRun:
    """One run's config, composed once and validated once."""

    config: TrainConfig
    # The resolved config as plain data: what the run directory's config.yaml records.
    plain: dict[str, Any]
    # The option chosen in each config group (recipe, model, data, ...).
    choices: dict[str, Any]


def plain_config(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as plain data (enums as their strings), as :func:`to_plain` gives it."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert isinstance(plain, dict)
    return plain


def compose_run(overrides: list[str]) -> ComposedRun:
    """Compose ``overrides`` once and validate the result once."""
    composed = compose_raw(overrides, with_hydra=True)
    chosen = OmegaConf.to_container(composed.hydra.runtime.choices)
    choices = {k: v for k, v in chosen.items() if not k.startswith("hydra")}
    plain = to_plain(composed)
    return ComposedRun(build_config(plain), plain, choices)


def load_config(overrides: list[str]) -> TrainConfig:
    """Compose and validate: the typed config a run would get from these overrides."""
    return compose_run(overrides).config


def model_config(name: str) -> ModelConfig:
    """A fresh config of ``configs/model/<name>.yaml``, the one model catalogue (checked)."""
    from omegaconf.errors import OmegaConfBaseException

    node = compose_raw([f"model={name}"]).model
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        raise omegaconf_error_line(exc, TrainConfig) from None
