"""The ``weyl`` command: a thin dispatcher over the subcommands of :mod:`weyl.commands`.

The console script's entry point, and ``python -m weyl.cli`` (how torchrun starts it:
``torchrun ... -m weyl.cli train ...``). The subcommands are listed in
:data:`weyl.commands.registry.COMMANDS`; a command's module is imported only when it runs.

Any exception that escapes a command ends in one line, ``weyl <cmd>: <type>: <message>``, and
exit code 1 (2 for a config error, 130 for Ctrl-C); ``WEYL_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

from weyl.commands.registry import COMMANDS


def set_offline_defaults() -> None:
    """Nothing reaches the network unless the user opted in by setting these themselves."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def usage() -> str:
    """Top-level help text listing the subcommands."""
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: weyl <command> [args...]",
        "",
        "Train Transformers without learning-rate warmup (AdamW², spectral diagnostics, recipes).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run `weyl <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``weyl`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from weyl import __version__

        print(f"weyl {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(
            f"weyl: unknown command '{name}'; choose one of: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    set_offline_defaults()
    module_name, _, function = COMMANDS[name][0].partition(":")
    if os.environ.get("WEYL_DEBUG") == "1" or os.environ.get("SUBMITIT_EXECUTOR"):
        return _run(module_name, function, rest)  # a traceback; submitit records the failure
    try:
        return _run(module_name, function, rest)
    except KeyboardInterrupt:
        # Ctrl-C outside a training loop (set-up, report, prepare): nothing half-written is kept.
        print(f"weyl {name}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        from weyl.config import ConfigError

        text = str(exc).strip()
        message = text.splitlines()[0] if text else ""
        if isinstance(exc, ConfigError):
            print(f"weyl {name}: {message}", file=sys.stderr)
            return 2
        print(
            f"weyl {name}: {type(exc).__name__}: {message} (WEYL_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


def _run(module_name: str, function: str, argv: list[str]) -> int:
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
