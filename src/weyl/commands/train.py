"""``weyl train``: compose, validate and run a recipe; ``-m`` sweeps and Hydra's inspection flags
go through Hydra's own main.

A single run is composed once with Hydra's compose API, validated once and started
(:func:`weyl.train.launch.launch_recipe`): a bad key or value fails with one line (exit code 2)
before anything is built. ``-m`` sweeps, ``--cfg``, ``--info``, ``--hydra-help`` (and
``hydra/launcher=...`` with ``-m``) go through ``hydra.main``, which composes each job once;
each sweep job is validated once in :func:`_task`. Flags are told from overrides by Hydra's
own argument parser.

Exit codes (:mod:`weyl.train.exit_codes`): the run's outcome (0 finished, 4 crashed, 3
preempted, 130 interrupted), 2 for bad input, 1 for any other error, each with one line on
stderr (``WEYL_DEBUG=1`` re-raises for the traceback). A ``-m`` sweep exits with the most
serious code of its jobs (:func:`~weyl.train.exit_codes.worst_exit_code`); a Ctrl-C stops the
sweep. Under submitit the exception is re-raised so that submitit records the failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weyl.config import ConfigError, build_config
from weyl.config.compose import (
    CONFIG_GROUPS,
    available_options,
    check_override_syntax,
    check_yaml_files,
    compose_raw,
    compose_run,
    config_dir,
    first_job_overrides,
    to_plain,
    without_hydra_overrides,
)
from weyl.train.exit_codes import BAD_INPUT, ERROR, INTERRUPTED, worst_exit_code
from weyl.train.run_status import read_status

# Hydra's flags that take over from the single-run path (each needs Hydra's own main).
_HYDRA_MODES = (
    "multirun", "cfg", "info", "hydra_help", "shell_completion", "resolve", "package",
    "config_path", "config_name", "config_dir", "experimental_rerun",
)  # fmt: skip

_exit_code = 0


def help_text() -> str:
    """``weyl train --help``: usage, examples and the options of every config group."""
    lines = [
        "usage: weyl train [recipe=<path>] [group=<option>] [key=value ...] [Hydra flags]",
        "",
        "Compose configs/train.yaml with a recipe and overrides, validate it, and train.",
        "",
        "examples:",
        "  weyl train recipe=smoke/gpt_tiny",
        "  weyl train recipe=smoke/gpt_tiny optim.tau=0.02 trainer.max_steps=50 name=my_run",
        "  weyl train recipe=smoke/gpt_tiny --cfg job       # print the composed config",
        "  weyl train -m recipe=smoke/gpt_tiny optim.tau=0.01,0.02   # a sweep",
        "",
        "config groups and their options:",
    ]
    for group in CONFIG_GROUPS:
        lines.append(f"  {group}: {', '.join(available_options(group))}")
    lines += [
        "",
        "Each run writes into run_dir (default runs/<name>): config.yaml, command.txt, meta.json,",
        "metrics.jsonl, checkpoints/. A relaunch continues the run from its newest checkpoint when",
        "its config is unchanged (trainer.resume=auto); trainer.resume=force continues it under a",
        "changed config, trainer.resume=never starts fresh and moves the old run aside.",
        "Hydra's own flags (--cfg job|hydra|all, -m, --info, --hydra-help) are passed through.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` read by Hydra's own argument parser: its flags, and ``overrides``."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> None:  # argparse prints its usage block; weyl prints one line
        raise ConfigError(f"{message} (see `weyl train --help`)")

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_intermixed_args(argv)


def uses_hydra_main(args: argparse.Namespace) -> bool:
    """True for a sweep or an inspection flag (``--cfg``, ``--info``, ...): Hydra's main runs it."""
    return any(getattr(args, name) not in (None, False) for name in _HYDRA_MODES)


def _fail(message: str, code: int = BAD_INPUT) -> int:
    print(f"weyl train: {message}", file=sys.stderr)
    return code


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _interrupted_line(summary: dict | None, run_dir: str | None) -> str:
    """The one line after a Ctrl-C (clean stop, second Ctrl-C, or during set-up)."""
    if summary is not None:
        return (
            f"interrupted at step {summary['step']}; checkpoint saved in {run_dir}; "
            "rerun the same command to continue"
        )
    status = read_status(run_dir) if run_dir and Path(run_dir).is_dir() else None
    reason = (status or {}).get("reason") or ""
    if "second Ctrl-C" in reason:
        return (
            f"aborted by a second Ctrl-C at step {status['step']}; no new checkpoint; "
            "rerun the same command to continue from the newest one"
        )
    return "interrupted (Ctrl-C) before training started; nothing was trained"


def _export_submitit_layout() -> bool:
    """Under hydra-submitit-launcher, expose submitit's tasks as torch.distributed env vars.

    Returns True when running as a submitit Slurm job (torchrun is not in the chain there).
    """
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return False
    if "WORLD_SIZE" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        # weyl picks cuda:LOCAL_RANK itself, so every task keeps seeing all of its node's GPUs;
        # overwrite: a MASTER_PORT/MASTER_ADDR the user exported is read back, not rejected.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


def _run_job(start: Callable[[], dict[str, Any]], under_submitit: bool) -> int:
    """Run one job (a single run or one job of a sweep); returns its exit code, after one line
    on stderr for a failure. A Ctrl-C raises SystemExit(130): it ends a sweep too."""
    debug = os.environ.get("WEYL_DEBUG") == "1"
    try:
        summary = start()
    except KeyboardInterrupt as stop:
        if under_submitit or debug:
            raise
        if _is_rank0():  # start_run names the run dir on the exception once it knows it
            line = _interrupted_line(None, getattr(stop, "run_dir", None))
            print(f"weyl train: {line}", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None  # ends a sweep too: the user asked to stop
    except ConfigError as exc:
        if under_submitit or debug:
            raise
        return _fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        # Set-up errors (missing data set, a vocabulary larger than the model) are one line.
        if under_submitit or debug:
            raise  # submitit must record the failure, not a success
        return _fail(_first_line(exc))
    except Exception as exc:
        # Anything else (an I/O error, a bug): one line, status.json says "failed", exit 1.
        if under_submitit or debug:
            raise
        return _fail(
            f"{type(exc).__name__}: {_first_line(exc)} (WEYL_DEBUG=1 for the traceback)", ERROR
        )
    code = int(summary.get("exit_code", 0)) if isinstance(summary, dict) else 0
    if code == INTERRUPTED:
        if _is_rank0():
            line = _interrupted_line(summary, summary.get("run_dir"))
            print(f"weyl train: {line}", file=sys.stderr)
        if not under_submitit:
            raise SystemExit(INTERRUPTED)  # a Ctrl-C ends the whole sweep, not one job
    if under_submitit and summary.get("state") in ("preempted", "interrupted"):
        # No result for submitit to record: the sweep waits for the requeued job instead.
        raise SystemExit(code)
    return code


def _run_single(overrides: list[str], argv: list[str]) -> int:
    """Compose once, validate once, run (no Hydra main: no Hydra output dirs or logging)."""
    from weyl.train.launch import launch_recipe

    under_submitit = _export_submitit_layout()
    try:
        return _run_job(lambda: launch_recipe(overrides, ["weyl", "train", *argv]), under_submitit)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else ERROR


def _task(cfg) -> None:  # the Hydra task function of a sweep job; Hydra passes the DictConfig
    under_submitit = _export_submitit_layout()
    from hydra.core.hydra_config import HydraConfig

    from weyl.train.launch import start_run

    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    plain: dict[str, Any] = {}

    def start() -> dict[str, Any]:
        plain.update(to_plain(cfg))
        if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
            plain["run_dir"] = hydra_cfg.runtime.output_dir
        typed = build_config(plain)  # this job's one validation
        return start_run(typed, plain, ["weyl", "train", *sys.argv[1:]], extra={"choices": choices})

    _record(_run_job(start, under_submitit))


def _record(code: int) -> None:
    """Keep the most serious exit code of this process's jobs (one, or a whole -m sweep)."""
    global _exit_code
    _exit_code = worst_exit_code([_exit_code, code])


def _run_hydra_main(argv: list[str]) -> int:
    """Hand ``argv`` to Hydra's main (a sweep, or ``--cfg``/``--info``/``--hydra-help``)."""
    global _exit_code
    import hydra

    from weyl.config.compose import register_schemas

    register_schemas()
    _exit_code = 0
    entry = hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)(_task)
    saved_argv = sys.argv
    sys.argv = ["weyl train", *argv]
    try:
        entry()
    except SystemExit as stop:  # Hydra's own usage errors, and a Ctrl-C that ends the sweep
        code = stop.code if isinstance(stop.code, int) else ERROR if stop.code else 0
        _record(code)
    finally:
        sys.argv = saved_argv
    return _exit_code


def _check_before_hydra(args: argparse.Namespace) -> None:
    """Hydra reports a broken YAML file and a bad key, type or value in many lines (a sweep: in
    every job); say it in one first. A sweep's first job is composed and validated here (a key
    unknown to it is unknown to all); each job is then composed and validated by Hydra."""
    check_yaml_files(args.overrides)
    if args.multirun:
        first = first_job_overrides(args.overrides)
        if first is not None:
            compose_run(first)
    elif args.cfg or args.info:
        compose_raw(without_hydra_overrides(args.overrides))


def check_arguments(argv: list[str]) -> int:
    """What ``weyl train argv`` would refuse before starting: 0, or the one line and exit code 2.
    A single run's config is composed and validated; a sweep's files are checked.

    Run by ``weyl torchrun`` before it starts any worker (each worker then composes its own).
    """
    try:
        args, hydra_main = _prechecked(argv)
        if not hydra_main:
            compose_run(args.overrides)
    except ConfigError as exc:
        return _fail(str(exc))
    return 0


def _prechecked(argv: list[str]):
    """Parse ``argv`` and check what can be checked before running: the overrides' syntax, and
    for Hydra's main the files it will read. Returns (args, whether Hydra's main runs it)."""
    args = parse_args(argv)
    check_override_syntax(args.overrides)
    hydra_main = uses_hydra_main(args)
    if hydra_main:
        _check_before_hydra(args)
    return args, hydra_main


def main(argv: list[str]) -> int:
    """``weyl train``: one run through :func:`weyl.train.launch.launch_recipe`, or Hydra's main."""
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    try:
        args, hydra_main = _prechecked(argv)
    except ConfigError as exc:
        return _fail(str(exc))
    code = _run_hydra_main(argv) if hydra_main else _run_single(args.overrides, argv)
    from weyl.train.distributed import exit_launched_worker

    exit_launched_worker(code)  # a torchrun worker after gloo: no finalization
    return code
