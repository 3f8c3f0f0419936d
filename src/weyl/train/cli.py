"""``weyl train``: the Hydra app that composes, validates and runs a recipe.

The config is composed and validated once with Hydra's compose API before Hydra's own main
takes over, so a bad key or value fails with one line (exit code 2) before anything is built;
Hydra's flags (``--cfg job``, ``-m`` sweeps, ``hydra/launcher=...``) then work as usual.

Exit codes (:mod:`weyl.train.exit_codes`): the run's outcome (0 finished, 4 crashed, 3
preempted, 130 interrupted), 2 for bad input, 1 for any other error, each with one line on
stderr (``WEYL_DEBUG=1`` re-raises for the traceback). A ``-m`` sweep exits with the most
serious code of its jobs (:func:`~weyl.train.exit_codes.worst_exit_code`); a Ctrl-C stops the
sweep. Under submitit the exception is re-raised so that submitit records the failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from weyl.config.compose import (
    CONFIG_GROUPS,
    ConfigFileError,
    available_options,
    check_override_syntax,
    config_dir,
    first_job,
    load_config,
    to_plain,
)
from weyl.config.validate import ConfigError
from weyl.train.exit_codes import BAD_INPUT, ERROR, INTERRUPTED, worst_exit_code
from weyl.train.run_status import read_status

# Flags Hydra consumes itself; the ones in _TAKES_VALUE are followed by a value.
_HYDRA_FLAGS = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--resolve",
    "--info",
    "-i",
    "--hydra-help",
    "--shell-completion",
    "-sc",
    "--multirun",
    "-m",
    "--run",
    "-r",
    "--config-dir",
    "-cd",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--experimental-rerun",
}
_TAKES_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--config-dir",
    "-cd",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--experimental-rerun",
}
_NO_PREVALIDATION = {
    "--info",
    "-i",
    "--hydra-help",
    "--shell-completion",
    "-sc",
    "--multirun",
    "-m",
}

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


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra flags (with their values) from ``key=value`` overrides."""
    flags, overrides = [], []
    it = iter(argv)
    for arg in it:
        name = arg.split("=", 1)[0] if arg.startswith("-") else arg
        if name in _HYDRA_FLAGS:
            flags.append(arg)
            if name in _TAKES_VALUE and "=" not in arg:
                flags.append(next(it, ""))
        else:
            overrides.append(arg)
    return flags, overrides


def _fail(message: str, code: int = BAD_INPUT) -> int:
    print(f"weyl train: {message}", file=sys.stderr)
    return code


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _interrupted_line(summary: dict | None, run_dir: str) -> str:
    """The one line after a Ctrl-C (clean stop, second Ctrl-C, or during set-up)."""
    if summary is not None:
        return (
            f"interrupted at step {summary['step']}; checkpoint saved in {run_dir}; "
            "rerun the same command to continue"
        )
    status = read_status(run_dir) if Path(run_dir).is_dir() else None
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


def _task(cfg) -> None:  # the Hydra task function; Hydra passes the composed DictConfig
    under_submitit = _export_submitit_layout()
    from hydra.core.hydra_config import HydraConfig

    plain = to_plain(cfg)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        plain["run_dir"] = hydra_cfg.runtime.output_dir
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    from weyl.train.launch import start_run

    debug = os.environ.get("WEYL_DEBUG") == "1"
    try:
        summary = start_run(plain, ["weyl", "train", *sys.argv[1:]], extra={"choices": choices})
    except KeyboardInterrupt:
        if under_submitit or debug:
            raise
        if _is_rank0():
            print(f"weyl train: {_interrupted_line(None, plain['run_dir'])}", file=sys.stderr)
        raise SystemExit(INTERRUPTED) from None  # ends a sweep too: the user asked to stop
    except ConfigError as exc:
        if under_submitit or debug:
            raise
        _record(_fail(str(exc)))
        return
    except (ValueError, FileNotFoundError) as exc:
        # Set-up errors (missing data set, a vocabulary larger than the model) are one line.
        if under_submitit or debug:
            raise  # submitit must record the failure, not a success
        _record(_fail(_first_line(exc)))
        return
    except Exception as exc:
        # Anything else (an I/O error, a bug): one line, status.json says "failed", exit 1.
        if under_submitit or debug:
            raise
        _record(
            _fail(f"{type(exc).__name__}: {_first_line(exc)} (WEYL_DEBUG=1 for the traceback)", ERROR)
        )
        return
    code = int(summary.get("exit_code", 0)) if isinstance(summary, dict) else 0
    _record(code)
    if code == INTERRUPTED:
        if _is_rank0():
            print(f"weyl train: {_interrupted_line(summary, plain['run_dir'])}", file=sys.stderr)
        if not under_submitit:
            raise SystemExit(INTERRUPTED)  # a Ctrl-C ends the whole sweep, not one job
    if under_submitit and summary.get("state") in ("preempted", "interrupted"):
        # No result for submitit to record: the sweep waits for the requeued job instead.
        raise SystemExit(code)


def _record(code: int) -> None:
    """Keep the most serious exit code of this process's jobs (one, or a whole -m sweep)."""
    global _exit_code
    _exit_code = worst_exit_code([_exit_code, code])


def _check_sweep_files(overrides: list[str]) -> None:
    """Before a sweep starts: its first job's config files must parse. Other config errors are
    left to each job (a value wrong for one recipe of the sweep may be right for the next)."""
    try:
        load_config(first_job(overrides))
    except ConfigFileError:
        raise
    except ConfigError:
        pass


def check_arguments(argv: list[str]) -> int:
    """Compose and validate what ``weyl train argv`` would run: 0, or the one line and exit code 2.

    Also run by ``weyl torchrun`` before it starts any worker.
    """
    flags, overrides = split_args(argv)
    names = {f.split("=", 1)[0] for f in flags}
    try:
        check_override_syntax(overrides)
        if names & {"-m", "--multirun"}:
            _check_sweep_files(overrides)
        elif not names & _NO_PREVALIDATION:
            load_config(overrides)
    except ConfigError as exc:
        return _fail(str(exc))
    return 0


def main(argv: list[str]) -> int:
    """Validate the overrides, then hand over to Hydra's main."""
    global _exit_code
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    code = check_arguments(argv)
    if code:
        return code
    import hydra

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
    from weyl.train.distributed import exit_launched_worker

    exit_launched_worker(_exit_code)  # a torchrun worker after gloo: no finalization
    return _exit_code
