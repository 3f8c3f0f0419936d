"""`weyl demo --quick`, then the full `weyl demo`: the full demo must not continue the quick runs.

The sequence a user runs in turn, through the installed script. Shrunk to a 1-layer model so it
takes seconds, but with the demo's real step counts (300, then 1000) and schedules: every full
run must start at step 1 in its own directory and follow the 1000-step cosine from its first
logged step (a run that continued the quick one would show the 300-step cosine's values, ending
at the floor LR, up to step 300).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from weyl.report.verdicts import METHODS

WEYL = str(Path(sys.executable).parent / "weyl")
TINY = [
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "model.block_size=16",
    "data.block_size=16",
    "trainer.global_batch_size=2",
    "trainer.eval_batches=1",
    "trainer.log_every=50",
    "diagnostics.enabled=false",
]


def weyl_demo(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [WEYL, "demo", "--out", str(out), "--no-progress", "--threads", "1", *args, *TINY],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip() and "event" not in line]


def cosine_lr(step: int, total: int, peak: float, floor: float) -> float:
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * step / total))


def test_quick_then_full_demo_keeps_runs_apart(tmp_path):
    out = tmp_path / "demo"
    quick = weyl_demo(out, "--quick")
    assert quick.returncode in (0, 1), quick.stderr  # 1: verdicts need the real model
    full = weyl_demo(out)
    assert full.returncode in (0, 1), full.stderr
    for method in METHODS:
        assert json.loads((out / "quick" / method / "status.json").read_text())["step"] == 300
        rows = records(out / method)
        assert rows[0]["step"] == 50 and rows[-1]["step"] == 1000
        assert all(math.isfinite(r["loss"]) for r in rows)
    # AdamW without warmup follows the 1000-step cosine from its first logged step.
    for r in records(out / "adamw_nowarmup"):
        assert math.isclose(r["lr"], cosine_lr(r["step"] - 1, 1000, 1e-2, 1e-4), rel_tol=1e-9)
