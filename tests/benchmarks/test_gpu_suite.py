"""benchmarks/gpu_suite.py's CPU dry run: every part runs at toy sizes, so the suite cannot rot
while no GPU is around (issue 17)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_suite_dry_run_runs_every_part_and_writes_its_table(tmp_path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    env = {k: v for k, v in env.items() if not k.startswith(("WEYL_TEST_", "SLURM_"))}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "[gpu_suite" in result.stdout  # progress lines
    data = json.loads((out / "gpu_suite.json").read_text())
    failed = {p: data[p] for p in data["parts"] if isinstance(data[p], dict) and "error" in data[p]}
    assert failed == {}
    assert data["env"]["sdpa_backend"] != "none seen"
    opt = data["optimizer"]
    assert {(r["model"], r["optimizer"]) for r in opt if "error" not in r} == {
        (m, o)
        for m in ("S", "L")
        for o in (
            "torch AdamW fused",
            "torch AdamW foreach",
            "weyl adamw (build_optimizer)",
            "weyl adamw2 (default)",
        )
    }
    assert all(r["host_syncs"] >= 0 and r["ms"] > 0 for r in opt)
    runs = {(r["run"], r["mode"]) for r in data["throughput"] if "error" not in r}
    assert len(runs) == 6
    assert (
        data["diagnostics"]["pass_s"] > 0 and data["diagnostics"]["share_at_default_interval"] > 0
    )
    crash = {r["optimizer"]: r for r in data["crash"]}
    assert crash.keys() == {"adamw", "adamw2"}
    assert all(r["state"] == "finished" and r["along"] for r in crash.values())
    dist = data["distributed"]
    assert [(r["strategy"], r["state"], r["step"]) for r in dist] == [
        ("ddp", "finished", 4),
        ("fsdp", "finished", 4),
    ]
    assert all(r["first_launch"].startswith("stopped") and r["logged_steps"][-1] == 4 for r in dist)
    table = (out / "gpu_suite.md").read_text()
    for part in ("optimizer", "throughput", "diagnostics", "crash", "distributed"):
        assert f"## {part}" in table
