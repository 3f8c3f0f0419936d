"""Progress of one phase of ``weyl prepare`` (tokenizing, writing a bin) on stderr.

On a terminal a rich bar; otherwise (a Slurm ``.out``, a log file) one plain line every
``every_s`` seconds and one when the phase ends, flushed, e.g.::

    prepare | tokenizing train | 1,200,000/8,009,762 documents (15%) | 1.31G tokens | 3.1k documents/s | 3.4M tok/s | elapsed 6m27s | eta 36m40s

stderr, because stdout carries the command's JSON result.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from weyl.readable_numbers import format_duration, format_si

DEFAULT_EVERY_S = 30.0


class PrepareProgress:
    """Counts documents and tokens of one phase; ``total_documents`` or ``total_tokens`` sets 100%."""

    def __init__(
        self,
        phase: str,
        *,
        total_documents: int | None = None,
        total_tokens: int | None = None,
        every_s: float = DEFAULT_EVERY_S,
        stream: TextIO | None = None,
        enabled: bool = True,
        documents_name: str = "documents",
    ) -> None:
        self.phase = phase
        self.documents_name = documents_name
        self.total_documents, self.total_tokens = total_documents, total_tokens
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.documents = 0
        self.tokens = 0
        self._t0 = time.monotonic()
        self._last_line = self._t0
        self._bar: Any = None
        self._printed: tuple[int, int] | None = None
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(f"[bold]{phase}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task(phase, total=self._total()[0], counts="")
            self._bar.start()

    def _total(self) -> tuple[int | None, int]:
        if self.total_documents is not None:
            return self.total_documents, self.documents
        return self.total_tokens, self.tokens

    def _counts(self, elapsed: float) -> list[str]:
        parts = []
        if self.documents or self.total_documents is not None:
            of = f"/{self.total_documents:,}" if self.total_documents is not None else ""
            parts.append(f"{self.documents:,}{of} {self.documents_name}")
        if self.tokens or self.total_tokens is not None:
            of = f"/{format_si(self.total_tokens)}" if self.total_tokens is not None else ""
            parts.append(f"{format_si(self.tokens)}{of} tokens")
        if elapsed > 0:
            if self.documents:
                parts.append(f"{format_si(self.documents / elapsed)} {self.documents_name}/s")
            if self.tokens:
                parts.append(f"{format_si(self.tokens / elapsed)} tok/s")
        return parts

    def line(self, now: float | None = None) -> str:
        """The plain progress line as of ``now`` (default: the current time)."""
        elapsed = (time.monotonic() if now is None else now) - self._t0
        total, done = self._total()
        counts = self._counts(elapsed)
        if total:
            counts[0] += f" ({100 * done / total:.0f}%)"
        parts = ["prepare", self.phase, *counts, f"elapsed {format_duration(elapsed)}"]
        if total and 0 < done < total:
            parts.append(f"eta {format_duration(elapsed / done * (total - done))}")
        return " | ".join(parts)

    def update(self, documents: int = 0, tokens: int = 0) -> None:
        """Add finished documents / tokens; prints a line when ``every_s`` has passed."""
        self.documents += documents
        self.tokens += tokens
        if not self.enabled:
            return
        if self._bar is not None:
            elapsed = time.monotonic() - self._t0
            self._bar.update(
                self._task, completed=self._total()[1], counts=" | ".join(self._counts(elapsed))
            )
            return
        now = time.monotonic()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            self._print_line(now)

    def _print_line(self, now: float | None = None) -> None:
        self._printed = (self.documents, self.tokens)
        print(self.line(now), file=self.stream, flush=True)

    def close(self) -> None:
        """End the phase: stop the bar (it stays on screen), or print the final line."""
        if not self.enabled:
            return
        self.enabled = False
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._printed != (self.documents, self.tokens):
            self._print_line()

    def __enter__(self) -> PrepareProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
