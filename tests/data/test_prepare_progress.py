"""`weyl prepare` progress without a terminal: periodic plain lines with documents/s and tokens/s
on stderr, the JSON result alone on stdout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from weyl.data import prepare_progress
from weyl.data.openwebtext import prepare_openwebtext
from weyl.data.prepare_progress import PrepareProgress

WEYL = Path(sys.executable).parent / "weyl"
TOKENIZING = re.compile(
    r"^prepare \| tokenizing train \| ([\d,]+)/([\d,]+) documents \(\d+%\) \| \S+ tokens \| "
    r"\S+ documents/s \| \S+ tok/s \| elapsed \S+"
)


def test_openwebtext_prepare_prints_progress_lines_to_a_log_file(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text(
        "".join(
            json.dumps({"text": f"document {i}: " + "word " * (i % 40)}) + "\n" for i in range(450)
        )
    )
    out, stdout, stderr = tmp_path / "owt", tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "w") as o, open(stderr, "w") as e:
        code = subprocess.run(
            [
                str(WEYL),
                "prepare",
                "openwebtext",
                "--source",
                str(source),
                "--out",
                str(out),
                "--num-proc",
                "1",
                "--cache-dir",
                str(tmp_path / "hf"),
                "--docs-per-shard",
                "100",
                "--progress-every",
                "0",
            ],
            stdout=o,
            stderr=e,
            env={**os.environ, "WEYL_DATA_DIR": str(tmp_path / "root")},
            timeout=300,
        ).returncode
    assert code == 0, stderr.read_text()
    meta = json.loads((out / "meta.json").read_text())
    train_docs = meta["splits"]["train"]["documents"]
    log = stderr.read_text()
    assert "\r" not in log  # no tqdm carriage returns in a file
    counts = [
        (int(done.replace(",", "")), int(of.replace(",", "")))
        for done, of in (m.groups() for m in map(TOKENIZING.match, log.splitlines()) if m)
    ]
    # One line per shard of at most 100 documents, counting up to the split's real size.
    done = [n for n, _ in counts]
    assert len(done) == -(-train_docs // 100) and done[-1] == train_docs
    assert all(0 < b - a <= 100 for a, b in zip([0, *done], done))
    assert all(of == train_docs for _, of in counts)
    assert "prepare | writing train.bin" in log and "prepare | tokenizing val" in log
    assert json.loads(stdout.read_text())["splits"] == meta["splits"]  # stdout: the result only
    # Tokenizing in shards writes the same bins as one pass over each split.
    whole = tmp_path / "whole"
    prepare_openwebtext(whole, str(source), cache_dir=tmp_path / "hf2", progress=False)
    for name in ("train.bin", "val.bin"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()


def test_plain_lines_come_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 5.0, 11.0, 12.0, 12.5])
    monkeypatch.setattr(prepare_progress.time, "monotonic", lambda: next(clock))

    class Log(list):
        def write(self, text: str) -> None:
            self.append(text)

        def flush(self) -> None:
            pass

    stream = Log()
    progress = PrepareProgress("writing x.bin", total_tokens=4000, every_s=10.0, stream=stream)
    for _ in range(4):  # at t = 1, 5 (too soon), 11 (a line), 12 (too soon)
        progress.update(tokens=1000)
    progress.close()  # t = 12.5 (elapsed for the line): the final line
    lines = [t for t in "".join(stream).splitlines() if t]
    assert lines[0].startswith("prepare | writing x.bin | 3k/4k tokens (75%) | 273 tok/s")
    assert lines[1].startswith("prepare | writing x.bin | 4k/4k tokens (100%) | 320 tok/s")
    assert len(lines) == 2
