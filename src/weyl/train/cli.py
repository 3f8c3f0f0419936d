"""``weyl train``: the Hydra app that composes, validates and runs a recipe.

The config is composed and validated once with Hydra's compose API before Hydra's own main
takes over, so a bad key or value fails with one line (exit code 2) before anything is built;
Hydra's flags (``--cfg job``, ``-m`` sweeps, ``hydra/launcher=...``) then work as usual.
"""

from __future__ import annotations

import os
import sys

from weyl.config.compose import (
    CONFIG_GROUPS,
    available_options,
    config_dir,
    load_config,
    to_plain,
)
from weyl.config.validate import ConfigError, validate

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
        "metrics.jsonl, checkpoints/. A relaunch with resume=auto continues from the newest checkpoint.",
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


def _fail(message: str) -> int:
    print(f"weyl train: {message}", file=sys.stderr)
    return 2


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
    global _exit_code
    under_submitit = _export_submitit_layout()
    from hydra.core.hydra_config import HydraConfig

    from weyl.train.run_dir import prepare_run_dir

    plain = to_plain(cfg)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        plain["run_dir"] = hydra_cfg.runtime.output_dir
    try:
        typed = validate(plain)
    except ConfigError as exc:
        if under_submitit:
            raise
        _exit_code = _fail(str(exc))
        return
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    prepare_run_dir(
        typed.run_dir, plain, ["weyl", "train", *sys.argv[1:]], extra={"choices": choices}
    )
    from weyl.train import run_training

    try:
        summary = run_training(typed)
    except (ValueError, FileNotFoundError) as exc:
        # Set-up errors (missing data set, a vocabulary larger than the model) are one line;
        # WEYL_DEBUG=1 shows the traceback.
        if under_submitit or os.environ.get("WEYL_DEBUG") == "1":
            raise  # submitit must record the failure, not a success
        _exit_code = _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return
    _exit_code = int(summary.get("exit_code", 0)) if isinstance(summary, dict) else 0
    if under_submitit and summary.get("state") == "preempted":
        # No result for submitit to record: the sweep waits for the requeued job instead.
        raise SystemExit(_exit_code)


def main(argv: list[str]) -> int:
    """Validate the overrides, then hand over to Hydra's main."""
    global _exit_code
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    flags, overrides = split_args(argv)
    if not any(f.split("=", 1)[0] in _NO_PREVALIDATION for f in flags):
        try:
            load_config(overrides)
        except ConfigError as exc:
            return _fail(str(exc))
    import hydra

    _exit_code = 0
    entry = hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)(_task)
    saved_argv = sys.argv
    sys.argv = ["weyl train", *argv]
    try:
        entry()
    finally:
        sys.argv = saved_argv
    from weyl.train.distributed import exit_launched_worker

    exit_launched_worker(_exit_code)  # a torchrun worker after gloo: no finalization
    return _exit_code
