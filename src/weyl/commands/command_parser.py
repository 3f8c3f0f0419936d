"""The argument parser of weyl's argparse-based commands: errors are one line, exit code 2.

argparse's default prints the whole usage block before the error; ``weyl train`` (Hydra) and
every other weyl error print a single ``weyl <command>: <what is wrong>`` line, so the
subcommands do the same and point at ``--help`` instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line naming the command and ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: <message> (see <prog> --help)`` on stderr and exit 2."""
        print(f"{self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)
