"""``weyl torchrun``: torch's elastic launcher with weyl's exit codes and one-line endings.

``weyl torchrun [torchrun options] train recipe=...`` runs exactly what
``torchrun [torchrun options] -m weyl.cli train recipe=...`` runs (the same argument parser, the
same agent, rendezvous and signal forwarding), and differs only in how it ends:

- a signal torchrun handles (Ctrl-C, SIGTERM, Slurm's USR1 ...) stops the workers, which
  checkpoint and print their own line; the launcher adds no traceback and exits with the code
  a single process would: 130 for SIGINT, 3 (preempted) for SIGTERM/SIGUSR1/SIGUSR2, 128 + N
  for the others;
- workers that exit non-zero end the launcher with the most serious of their weyl exit codes
  (crashed 4, bad input 2, ...) instead of torchrun's ChildFailedError table and exit 1; a
  worker killed by a signal or with a code weyl does not use gets one line naming rank and cause.
"""

from __future__ import annotations

import logging
import signal
import sys

from weyl.train.exit_codes import (
    BAD_INPUT,
    ERROR,
    INTERRUPTED,
    PREEMPTED,
    SEVERITY,
    worst_exit_code,
)

USAGE = "usage: weyl torchrun [torchrun options] <weyl command> [args ...]"
HELP = f"""{USAGE}

Run a weyl command (normally `train`) in N processes with torch's elastic launcher: the same
options as `torchrun` (--standalone, --nproc-per-node, --nnodes, --rdzv-*, --signals-to-handle,
--shutdown-timeout, ...), and `weyl torchrun OPTIONS train ARGS` runs what
`torchrun OPTIONS -m weyl.cli train ARGS` runs. It ends with weyl's exit codes instead of
torchrun's tracebacks: 130 after a Ctrl-C, 3 after a preemption signal, the workers' most
serious code when a run fails (4 crashed, 2 bad input, 1 error), 0 when every worker finished.

examples:
  weyl torchrun --standalone --nproc-per-node=8 train recipe=table1/vit_b_adamw2
  weyl torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT \\
      train recipe=table1/gpt2_s_adamw2

torchrun's options (torch.distributed.run's own parser):"""

# Signals after which weyl's workers checkpoint and exit as "preempted" (see weyl.train.signals).
_PREEMPTION_SIGNALS = {signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2}


def exit_code_for_signal(sig: int) -> int:
    """The code the launcher exits with after torchrun handled ``sig`` (as one process would)."""
    if sig == signal.SIGINT:
        return INTERRUPTED
    if sig in _PREEMPTION_SIGNALS:
        return PREEMPTED
    return 128 + int(sig)


def exit_code_for_failures(failures: dict[int, int]) -> tuple[int, str | None]:
    """Exit code and, when no worker explained itself, one line for ``{global rank: exit code}``.

    weyl's workers print their own line before exiting with a weyl code. A negative code is a
    worker killed by a signal, which printed nothing: either the root cause (the OOM killer,
    kill -9) or torchrun stopping the other ranks after the first one failed (SIGTERM, then
    SIGKILL) — so signal deaths count only when no rank exited with a weyl code.
    """
    explained = [code for code in failures.values() if code in SEVERITY]
    if explained:
        return worst_exit_code(explained), None
    rank, raw = min(failures.items())
    if raw < 0:
        try:
            cause = f"was killed by {signal.Signals(-raw).name}"
        except ValueError:
            cause = f"was killed by signal {-raw}"
    else:
        cause = f"exited with {raw}"
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    line = (
        f"rank {rank} {cause}{more} before saying why; the other ranks were stopped; "
        "rerun to resume from the newest checkpoint"
    )
    return ERROR, line


class _DropShutdownWarnings(logging.Filter):
    """torchrun logs each signal it receives or forwards and each worker's exit; the workers' own
    line (or the launcher's) already says what happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(
            part in message for part in ("death signal", "closing signal", "failed (exitcode")
        )


def _fail(message: str, code: int) -> int:
    print(f"weyl torchrun: {message}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
    """Entry point of ``weyl torchrun``."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from weyl.commands.command_parser import CommandParser

    parser = get_args_parser()
    parser.__class__ = CommandParser  # torchrun's usage errors: one line, exit 2
    parser.prog = "weyl torchrun"
    if not argv or argv[0] in ("-h", "--help"):
        text = parser.format_help()
        options = text[text.find("options:") :]  # torchrun's usage and positionals are ours above
        print(f"{HELP}\n\n{options}")
        return 0
    args = parser.parse_args(argv)
    from weyl.commands.registry import COMMANDS

    if args.module and args.training_script == "weyl.cli":
        command = (args.training_script_args or [""])[0]
    elif not args.module and not args.no_python:
        command = args.training_script
        args.training_script_args = [command, *args.training_script_args]
        args.training_script, args.module = "weyl.cli", True
    else:
        return _fail(f"runs weyl commands only; {USAGE}", BAD_INPUT)
    if command not in COMMANDS or command == "torchrun":
        return _fail(
            f"unknown weyl command '{command}'; choose one of: "
            f"{', '.join(c for c in COMMANDS if c != 'torchrun')} ({USAGE})",
            BAD_INPUT,
        )
    if command == "train" and "--help" not in args.training_script_args[1:]:
        from weyl.commands.train import check_arguments

        code = check_arguments(args.training_script_args[1:])  # a bad config: before any worker
        if code:
            return code
    for name in (  # filters do not propagate: set them on the loggers that emit
        "torch.distributed.elastic.agent.server.api",
        "torch.distributed.elastic.multiprocessing.api",
    ):
        logging.getLogger(name).addFilter(_DropShutdownWarnings())
    try:
        run(args)
    except SignalException as stop:
        return exit_code_for_signal(stop.sigval)
    except ChildFailedError as failed:
        code, line = exit_code_for_failures(
            {rank: failure.exitcode for rank, failure in failed.failures.items()}
        )
        return _fail(line, code) if line else code
    return 0
