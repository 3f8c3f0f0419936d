"""Collect the ``weyl …`` and ``make …`` commands that the repository's Markdown files show.

A command is a line of a fenced shell block (only the ``$ `` lines when the block shows a
session with output) or an inline code span. Continuation lines (``\\``) are joined and
trailing ``# comments`` dropped. For a ``$ `` line, the lines up to the next ``$ `` are what the
docs claim the command prints.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text"}
PROGRAMS = ("weyl", "make")
# Placeholders a reader replaces: <p>, ..., DIR, N.
_TEMPLATE = re.compile(r"<[^>]*>|\.\.\.|(?:^|[\s=])[A-Z][A-Z_]+(?:$|\s)")


@dataclass
class DocCommand:
    """One documented command and where it is shown."""

    text: str
    source: str  # file:line
    output: list[str] = field(default_factory=list)  # what the docs say it prints

    @property
    def words(self) -> list[str]:
        return self.text.split()

    @property
    def program(self) -> str:
        return self.words[0]

    @property
    def subcommand(self) -> str | None:
        return self.words[1] if len(self.words) > 1 else None

    @property
    def is_template(self) -> bool:
        return bool(_TEMPLATE.search(self.text))


def markdown_files() -> list[Path]:
    """Every Markdown file tracked by git (what a clone has)."""
    out = subprocess.run(
        ["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [REPO / name for name in out.split()]


def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def _is_command(text: str) -> bool:
    # A bare program name in prose ("`weyl`") is a name, not a command, and "weyl train: ..."
    # is what a command prints.
    words = text.split()
    return len(words) > 1 and words[0] in PROGRAMS and not words[1].endswith(":")


def _block_commands(lines: list[tuple[int, str]], source: str) -> list[DocCommand]:
    session = any(line.startswith("$ ") for _, line in lines)
    found: list[DocCommand] = []
    joined: list[tuple[int, str]] = []
    for number, line in lines:  # join backslash continuations first
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1].rstrip() + " " + line.strip())
        else:
            joined.append((number, line.rstrip()))
    for number, line in joined:
        if session:
            if line.startswith("$ "):
                text = _strip_comment(line[2:])
                found.append(DocCommand(text, f"{source}:{number}") if _is_command(text) else None)  # type: ignore[arg-type]
            elif found and found[-1] is not None and line.strip():
                found[-1].output.append(line.strip())
            continue
        text = _strip_comment(line)
        if _is_command(text):
            found.append(DocCommand(text, f"{source}:{number}"))
    return [c for c in found if c is not None]


def collect(path: Path) -> list[DocCommand]:
    """The commands shown in one Markdown file, in order."""
    commands: list[DocCommand] = []
    prose: list[str] = []
    rel = str(path.relative_to(REPO))
    block: list[tuple[int, str]] | None = None
    lang = ""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and block is None:
            block, lang = [], fence.group(1).lower()
            continue
        if fence and block is not None:
            if lang in SHELL_LANGS:
                commands += _block_commands(block, rel)
            block = None
            continue
        if block is not None:
            block.append((number, line))
        else:
            prose.append(line)
    text = " ".join(prose)
    for span in re.findall(r"`([^`]+)`", text):
        span = " ".join(span.split())
        if _is_command(span):
            commands.append(DocCommand(span, f"{rel} (inline)"))
    return commands


def all_commands() -> list[DocCommand]:
    """Every documented command of the repository, deduplicated by text (first place kept)."""
    seen: dict[str, DocCommand] = {}
    for path in markdown_files():
        for command in collect(path):
            seen.setdefault(command.text, command)
    return list(seen.values())
