"""Turn a composed config into typed schema objects, failing with one readable line.

Every error is a :class:`ConfigError` whose message names the offending key, what was given
and what is allowed, e.g. ``optim.lr: must be > 0, got -0.001``. Validation runs before any
model, data set or process group is built.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from weyl.config.schema import (
    DATA_SCHEMAS,
    MODEL_SCHEMAS,
    DiagnosticsConfig,
    LoggerConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    TrainerConfig,
)


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key."""


OPTIMIZERS = ("adamw", "adamw2", "sgd", "sgdw2")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")
CRASH_ACTIONS = ("stop", "rollback")
WANDB_MODES = ("offline", "online", "disabled")
CONSOLE_MODES = ("auto", "lines", "off")
TOKENIZERS = ("char", "bytes", "gpt2")
GPT_INITS = ("nanogpt", "xavier", "trunc_xavier")
VISION_INITS = ("timm", "xavier", "trunc_xavier")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (int → float allowed)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        if isinstance(value, list | tuple):
            (inner,) = typing.get_args(tp)
            return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    elif dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, key)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def build_dataclass(schema: type, values: Any, prefix: str) -> Any:
    """Build ``schema`` from a mapping, rejecting unknown keys and wrong types by name."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in values:
        if key not in fields:
            allowed = ", ".join(fields)
            raise ConfigError(f"{prefix}.{key}: unknown key; allowed keys: {allowed}")
    kwargs = {
        name: _coerce(values[name], hints[name], f"{prefix}.{name}")
        for name in fields
        if name in values
    }
    return schema(**kwargs)


def _pick_schema(section: Any, key: str, schemas: dict[str, type], prefix: str) -> type:
    choice = (section or {}).get(key) if isinstance(section, Mapping) else None
    if choice is None:
        raise ConfigError(f"{prefix}.{key}: missing; choose one of: {', '.join(schemas)}")
    if choice not in schemas:
        raise ConfigError(
            f"{prefix}.{key}: unknown '{choice}'; choose one of: {', '.join(schemas)}"
        )
    return schemas[choice]


def _one_of(value: Any, allowed: tuple[str, ...], key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown '{value}'; choose one of: {', '.join(allowed)}")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _check_model(m: Any) -> None:
    if m.family == "gpt":
        _require(m.n_layer > 0, "model.n_layer", f"must be > 0, got {m.n_layer}")
        _require(m.n_head > 0, "model.n_head", f"must be > 0, got {m.n_head}")
        _require(
            m.n_embd > 0 and m.n_embd % m.n_head == 0,
            "model.n_embd",
            f"must be a positive multiple of model.n_head={m.n_head}, got {m.n_embd}",
        )
        _require(m.block_size > 0, "model.block_size", f"must be > 0, got {m.block_size}")
        _require(m.vocab_size > 0, "model.vocab_size", f"must be > 0, got {m.vocab_size}")
        _one_of(m.init, GPT_INITS, "model.init")
    else:
        _one_of(m.init, VISION_INITS, "model.init")
        _require(m.img_size > 0, "model.img_size", f"must be > 0, got {m.img_size}")
        _require(m.num_classes > 0, "model.num_classes", f"must be > 0, got {m.num_classes}")
        _require(
            0.0 <= m.drop_path_rate < 1.0,
            "model.drop_path_rate",
            f"must be in [0, 1), got {m.drop_path_rate}",
        )
        if m.family == "vit":
            _require(
                m.embed_dim % m.num_heads == 0,
                "model.embed_dim",
                f"must be a multiple of model.num_heads={m.num_heads}, got {m.embed_dim}",
            )
            _require(
                m.img_size % m.patch_size == 0,
                "model.img_size",
                f"must be a multiple of model.patch_size={m.patch_size}, got {m.img_size}",
            )
        else:
            _require(
                len(m.depths) == len(m.num_heads),
                "model.num_heads",
                f"needs one entry per stage of model.depths ({len(m.depths)}), got {len(m.num_heads)}",
            )
        if m.family == "flatten_swin":
            _require(
                len(m.attention_pattern) == len(m.depths)
                and set(m.attention_pattern) <= {"L", "S"},
                "model.attention_pattern",
                f"needs one letter L or S per stage ({len(m.depths)}), got '{m.attention_pattern}'",
            )
    _require(
        0.0 <= getattr(m, "dropout", 0.0) < 1.0,
        "model.dropout",
        f"must be in [0, 1), got {getattr(m, 'dropout', 0.0)}",
    )
    _require(
        not m.sigma_reparam_pure or m.sigma_reparam,
        "model.sigma_reparam_pure",
        "needs model.sigma_reparam=true",
    )


def _check_data(d: Any, model: Any) -> None:
    if d.kind == "text":
        _one_of(d.tokenizer, TOKENIZERS, "data.tokenizer")
        _require(d.block_size > 0, "data.block_size", f"must be > 0, got {d.block_size}")
        if model.family != "gpt":
            raise ConfigError(
                f"data.kind: text data needs a gpt model, got model.family={model.family}"
            )
        _require(
            d.block_size <= model.block_size,
            "data.block_size",
            f"must be <= model.block_size={model.block_size}, got {d.block_size}",
        )
    else:
        if model.family == "gpt":
            raise ConfigError(
                "data.kind: image data needs a vision model (vit, swin, flatten_swin), got gpt"
            )
        _require(d.img_size > 0, "data.img_size", f"must be > 0, got {d.img_size}")
        for key in ("mixup", "cutmix"):  # Beta-distribution alphas
            value = getattr(d, key)
            _require(value >= 0.0, f"data.{key}", f"must be >= 0 (0 disables), got {value}")
        for key in ("label_smoothing", "random_erasing"):  # probabilities
            value = getattr(d, key)
            _require(0.0 <= value < 1.0, f"data.{key}", f"must be in [0, 1), got {value}")
        _require(0.0 < d.crop_pct <= 1.0, "data.crop_pct", f"must be in (0, 1], got {d.crop_pct}")
    _require(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")


def _check_optim(o: OptimConfig) -> None:
    _one_of(o.name, OPTIMIZERS, "optim.name")
    _require(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _require(len(o.betas) == 2, "optim.betas", f"needs two values [beta1, beta2], got {o.betas}")
    _require(
        all(0.0 <= b < 1.0 for b in o.betas),
        "optim.betas",
        f"each must be in [0, 1), got {o.betas}",
    )
    _require(o.eps > 0, "optim.eps", f"must be > 0, got {o.eps}")
    _require(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _require(
        o.tau is None or o.tau > 0,
        "optim.tau",
        f"must be > 0 (or null to disable the clip), got {o.tau}",
    )
    _require(o.power_iters >= 1, "optim.power_iters", f"must be >= 1, got {o.power_iters}")
    _require(0.0 <= o.momentum < 1.0, "optim.momentum", f"must be in [0, 1), got {o.momentum}")


def _check_schedule(s: ScheduleConfig, o: OptimConfig, t: TrainerConfig) -> None:
    _one_of(s.name, SCHEDULES, "schedule.name")
    _require(s.warmup_steps >= 0, "schedule.warmup_steps", f"must be >= 0, got {s.warmup_steps}")
    _require(s.warmup_epochs >= 0, "schedule.warmup_epochs", f"must be >= 0, got {s.warmup_epochs}")
    _require(
        not (s.warmup_steps and s.warmup_epochs),
        "schedule.warmup_epochs",
        "set either schedule.warmup_steps or schedule.warmup_epochs, not both",
    )
    if t.epochs <= 0:
        _require(
            s.warmup_steps < t.max_steps,
            "schedule.warmup_steps",
            f"must be < trainer.max_steps={t.max_steps}, got {s.warmup_steps}",
        )
    _require(
        0 <= s.min_lr <= o.lr, "schedule.min_lr", f"must be in [0, optim.lr={o.lr}], got {s.min_lr}"
    )


def _check_trainer(t: TrainerConfig) -> None:
    _require(
        t.max_steps > 0 or t.epochs > 0,
        "trainer.max_steps",
        f"must be > 0 (or set trainer.epochs), got {t.max_steps}",
    )
    _require(t.epochs >= 0, "trainer.epochs", f"must be >= 0, got {t.epochs}")
    _require(
        t.global_batch_size > 0,
        "trainer.global_batch_size",
        f"must be > 0, got {t.global_batch_size}",
    )
    _require(
        t.micro_batch_size >= 0,
        "trainer.micro_batch_size",
        f"must be >= 0, got {t.micro_batch_size}",
    )
    _require(t.grad_clip >= 0, "trainer.grad_clip", f"must be >= 0 (0 disables), got {t.grad_clip}")
    _one_of(t.precision, PRECISIONS, "trainer.precision")
    _one_of(t.strategy, STRATEGIES, "trainer.strategy")
    _one_of(t.on_crash, CRASH_ACTIONS, "trainer.on_crash")
    for key in ("eval_every", "log_every", "ckpt_every", "keep_last", "spike_window"):
        value = getattr(t, key)
        _require(value > 0, f"trainer.{key}", f"must be > 0, got {value}")
    _require(t.eval_batches >= 0, "trainer.eval_batches", f"must be >= 0, got {t.eval_batches}")
    _require(t.max_rollbacks >= 0, "trainer.max_rollbacks", f"must be >= 0, got {t.max_rollbacks}")
    _require(
        not t.ema, "trainer.ema", "EMA of weights is not implemented yet; set trainer.ema=false"
    )
    _require(t.spike_factor > 1.0, "trainer.spike_factor", f"must be > 1, got {t.spike_factor}")
    _require(
        t.divergence_factor == 0 or t.divergence_factor > 1.0,
        "trainer.divergence_factor",
        f"must be > 1 (or 0 to disable), got {t.divergence_factor}",
    )
    _require(
        t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
        "trainer.device",
        f"unknown '{t.device}'; choose auto, cpu, cuda or cuda:N",
    )


def _check_diagnostics(d: DiagnosticsConfig) -> None:
    _require(d.every > 0, "diagnostics.every", f"must be > 0, got {d.every}")
    _require(
        d.probe_batch_size > 0,
        "diagnostics.probe_batch_size",
        f"must be > 0, got {d.probe_batch_size}",
    )
    _require(
        bool(d.sec_s) and all(s > 0 for s in d.sec_s),
        "diagnostics.sec_s",
        f"needs positive integers, got {d.sec_s}",
    )
    _require(
        d.entropy_collapse > 0,
        "diagnostics.entropy_collapse",
        f"must be > 0, got {d.entropy_collapse}",
    )
    _require(
        0 < d.sec_concentrated <= 1,
        "diagnostics.sec_concentrated",
        f"must be in (0, 1], got {d.sec_concentrated}",
    )


SECTIONS: dict[str, Callable[[Any], type] | type] = {
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "diagnostics": DiagnosticsConfig,
}


def validate(container: Mapping[str, Any]) -> TrainConfig:
    """Validate a resolved, plain-dict config (without the ``hydra`` node) into a TrainConfig."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in container:
        if key not in known:
            raise ConfigError(
                f"{key}: unknown top-level key; allowed keys: {', '.join(sorted(known))}"
            )
    model_schema = _pick_schema(container.get("model"), "family", MODEL_SCHEMAS, "model")
    data_schema = _pick_schema(container.get("data"), "kind", DATA_SCHEMAS, "data")
    model = build_dataclass(model_schema, container.get("model"), "model")
    data = build_dataclass(data_schema, container.get("data"), "data")
    sections = {
        name: build_dataclass(schema, container.get(name), name)
        for name, schema in SECTIONS.items()
    }
    top = {k: container[k] for k in ("name", "run_dir", "seed") if k in container}
    hints = typing.get_type_hints(TrainConfig)
    top = {k: _coerce(v, hints[k], k) for k, v in top.items()}
    cfg = TrainConfig(model=model, data=data, **sections, **top)
    _require(bool(cfg.name), "name", "must be a non-empty run name")
    _require(bool(cfg.run_dir), "run_dir", "must be a non-empty path")
    _check_model(cfg.model)
    _check_data(cfg.data, cfg.model)
    _check_optim(cfg.optim)
    _check_trainer(cfg.trainer)
    _check_schedule(cfg.schedule, cfg.optim, cfg.trainer)
    _check_diagnostics(cfg.diagnostics)
    if cfg.logger.wandb.mode is not None:  # null: from WANDB_MODE at run time, else offline
        _one_of(cfg.logger.wandb.mode, WANDB_MODES, "logger.wandb.mode")
    _one_of(cfg.logger.console, CONSOLE_MODES, "logger.console")
    return cfg
