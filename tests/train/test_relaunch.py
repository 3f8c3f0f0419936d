"""A relaunch into a run directory continues the same run, or stops before touching anything.

Through the installed ``weyl`` script, as a user types it: a finished smoke run relaunched with a
changed ``optim.lr`` or ``trainer.max_steps`` must exit 2 with one line naming the key and leave
every file as it was; ``trainer.resume=force`` continues and records the change; ``never``
moves the old run aside; keys that only change what is observed may differ.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

WEYL = str(Path(sys.executable).parent / "weyl")
SMOKE = [
    "recipe=smoke/gpt_tiny",
    "trainer.max_steps=6",
    "trainer.ckpt_every=3",
    "trainer.eval_every=6",
    "trainer.log_every=1",
    "diagnostics.enabled=false",
    "logger.progress=false",
]


def weyl_train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [WEYL, "train", *SMOKE, f"run_dir={run_dir}", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def metric_steps(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in ("commands.log", ".lock")
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("relaunch") / "run"
    out = weyl_train(run_dir)
    assert out.returncode == 0, out.stderr
    return run_dir


@pytest.mark.parametrize(
    ("override", "key"),
    [("optim.lr=0.001", "optim.lr"), ("trainer.max_steps=9", "trainer.max_steps")],
)
def test_changed_trajectory_key_stops_before_touching_anything(
    finished_run, tmp_path, override, key
):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished_run), str(run_dir)], check=True)
    before = snapshot(run_dir)
    out = weyl_train(run_dir, override)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert key in err and "trainer.resume=force" in err and "trainer.resume=never" in err
    assert snapshot(run_dir) == before


def test_observation_keys_may_change(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished_run), str(run_dir)], check=True)
    out = weyl_train(run_dir, "trainer.log_every=2", "diagnostics.enabled=true")
    assert out.returncode == 0, out.stderr
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_force_continues_under_the_new_config_and_records_it(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished_run), str(run_dir)], check=True)
    old_losses = [r["loss"] for r in metric_steps(run_dir) if "event" not in r]
    out = weyl_train(run_dir, "trainer.max_steps=9", "trainer.resume=force")
    assert out.returncode == 0, out.stderr
    records = metric_steps(run_dir)
    events = [r for r in records if r.get("event") == "config_changed"]
    assert len(events) == 1 and events[0]["step"] == 6
    assert events[0]["changes"]["trainer.max_steps"] == [6, 9]
    steps = [r["step"] for r in records if "event" not in r]
    assert steps == list(range(1, 10))
    # The first 6 steps are the original run's, untouched.
    assert [r["loss"] for r in records if "event" not in r][:6] == old_losses
    assert yaml.safe_load((run_dir / "config.1.yaml").read_text())["trainer"]["max_steps"] == 6
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["max_steps"] == 9


def test_never_moves_the_old_run_aside_and_starts_fresh(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished_run), str(run_dir)], check=True)
    before = snapshot(run_dir)
    out = weyl_train(run_dir, "optim.lr=0.001", "trainer.resume=never")
    assert out.returncode == 0, out.stderr
    (kept,) = tmp_path.glob("run.old-*")
    kept_files = snapshot(kept)
    for name in ("config.yaml", "metrics.jsonl", "status.json"):
        assert kept_files[name] == before[name]
    records = [r for r in metric_steps(run_dir) if "event" not in r]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr"] == 0.001
    assert math.isfinite(records[-1]["loss"])
