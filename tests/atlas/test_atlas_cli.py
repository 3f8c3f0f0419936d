"""``weyl atlas`` end to end through the console script: 2 methods × 2 LRs × 1 width × 30 steps,
killed after its first run finished and run again; the Hydra path, with a crashed run.

The atlas's numbers are checked against the run directories' own files, read here with plain
loops; the killed atlas must reuse the finished run (its metrics.jsonl unchanged, byte for
byte) and complete the others.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
GRID = ["--methods", "adamw", "adamw2", "--lrs", "0.01", "0.03", "--widths", "32"]
GRID += ["--steps", "30", "--jobs", "1"]
FIRST = "adamw_w32_lr0.01_s0"  # the first run of the grid (one width, the first LR, method order)
L0 = math.log(128)  # the CPU GPT's vocabulary


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEYL_", "SLURM_"))}
    env.update(
        PYTHONPATH=str(REPO / "src"),
        WEYL_DATA_DIR=str(root / "data"),
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def atlas_cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "weyl.cli", "atlas", "--out", str(out), *args]


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def state_of(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return None


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas")
    out = root / "atlas"
    env = env_for(root)
    with (root / "first.log").open("w") as log:
        proc = subprocess.Popen(
            atlas_cmd(out, *GRID), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        first = out / "runs" / FIRST
        wait_for(lambda: state_of(first) == "finished" or proc.poll() is not None, 240, FIRST)
        os.kill(proc.pid, signal.SIGKILL)  # the atlas dies; its runs get SIGTERM and stop
        proc.wait()
        wait_for(lambda: group_gone(proc.pid), 120, "the killed atlas's runs to stop")
    kept = (first / "metrics.jsonl").read_bytes()
    rerun = subprocess.run(
        atlas_cmd(out, *GRID), cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    return out, kept, rerun


def test_the_rerun_reuses_the_finished_run_and_completes_the_rest(killed_and_rerun):
    out, kept, rerun = killed_and_rerun
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "1 done already, 3 to train" in rerun.stdout
    assert (out / "runs" / FIRST / "metrics.jsonl").read_bytes() == kept  # not retrained
    atlas = json.loads((out / "atlas.json").read_text())
    assert atlas["trained"] == 3 and atlas["reused"] == 1
    assert len(atlas["runs"]) == 4
    assert all(state_of(out / "runs" / r["run"]) == "finished" for r in atlas["runs"])


def test_outputs_hold_the_run_directories_own_numbers(killed_and_rerun):
    out, _, _ = killed_and_rerun
    atlas = json.loads((out / "atlas.json").read_text())
    assert atlas["init_loss"] == pytest.approx(L0)
    # ℓ₁ by hand: add-one character frequencies of the prepared training split, scored on val.
    (train_bin,) = (out.parent / "data").rglob("train.bin")
    train = np.fromfile(train_bin, dtype=np.uint16)
    val = np.fromfile(train_bin.with_name("val.bin"), dtype=np.uint16)
    ids, counts = np.unique(train, return_counts=True)
    freq = dict(zip(ids.tolist(), counts.tolist()))
    total = len(train) + 128
    val_ids, val_counts = np.unique(val, return_counts=True)
    nll = sum(
        -c * math.log((freq.get(t, 0) + 1) / total)
        for t, c in zip(val_ids.tolist(), val_counts.tolist())
    )
    assert atlas["unigram_loss"] == pytest.approx(nll / len(val), rel=1e-9)
    assert atlas["uniform_attention_entropy"] == pytest.approx(
        sum(math.log(i) for i in range(1, 65)) / 64
    )
    for row in atlas["runs"]:
        lines = (out / "runs" / row["run"] / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        evals = [r["eval/loss"] for r in records if "eval/loss" in r]
        qk = [r["attn/qk_sigma1_max"] for r in records if "attn/qk_sigma1_max" in r]
        entropy = [r["attn/entropy_min"] for r in records if "attn/entropy_min" in r]
        assert row["final_eval_loss"] == evals[-1]
        assert row["max_qk_sigma1"] == max(qk) and row["min_entropy"] == min(entropy)
        assert row["final_qk_sigma1"] == qk[-1] and row["final_min_entropy"] == entropy[-1]
        assert row["run"] == f"{row['method']}_w32_lr{row['lr']}_s0"
    for summary in atlas["methods"]:
        losses = [
            min(r["final_eval_loss"], L0) for r in atlas["runs"] if r["method"] == summary["method"]
        ]
        best = min(losses)
        assert summary["best_loss"] == pytest.approx(best)
        assert summary["lr_sensitivity"] == pytest.approx(sum(x - best for x in losses) / 2)
    for png in atlas["figures"].values():
        assert (out / png).stat().st_size > 5_000
    assert len(atlas["figures"]) == 5
    text = (out / "atlas.md").read_text()
    assert "## Fairness" in text and "same data in the same order" in text
    assert all(r["run"] in text for r in atlas["runs"])


def test_bad_arguments_are_one_line_exit_2(tmp_path):
    for args in (["--lrs", "x"], ["--methods", "nope"], ["--steps", "3"], ["optim.lr"]):
        done = subprocess.run(
            atlas_cmd(tmp_path / "a", *args), env=env_for(tmp_path), capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("weyl atlas: ") and done.stderr.count("\n") == 1


def test_the_hydra_path_trains_into_the_same_run_folder_and_a_crash_is_a_result(tmp_path):
    """With a Hydra launcher each method is one `weyl train -m` (here Hydra's basic launcher
    standing in for hydra/launcher=slurm), writing the run folder the local pool would; a run
    that crashes (a NaN loss injected at step 5) is a result counted as ℓ₀, not a failure."""
    out = tmp_path / "atlas"
    args = ["--methods", "z_loss", "--lrs", "0.01", "--widths", "32", "--steps", "10"]
    done = subprocess.run(
        atlas_cmd(out, *args, "hydra/launcher=basic"), cwd=tmp_path, capture_output=True,
        env=env_for(tmp_path, WEYL_TEST_INJECT_NAN_AT_STEP="5"), text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (row,) = json.loads((out / "atlas.json").read_text())["runs"]
    assert row["run"] == "z_loss_w32_lr0.01_s0"
    assert state_of(out / "runs" / row["run"]) == row["status"] == "crashed"
    assert "train -m" in (out / "runs" / row["run"] / "command.txt").read_text()
    assert row["final_eval_loss"] is None and row["counted_loss"] == pytest.approx(L0)
    assert row["failure_mode"] == "output-logit divergence"


def test_the_atlas_reaches_wandb_offline(killed_and_rerun, tmp_path, monkeypatch):
    """With the logger on, the atlas logs one summary run: both tables and the five figures."""
    import wandb

    from weyl.atlas.outputs import log_to_wandb
    from weyl.report.wandb_offline import read_offline_run

    out, _, _ = killed_and_rerun
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    atlas = json.loads((out / "atlas.json").read_text())
    figures = {name: out / png for name, png in atlas["figures"].items()}
    folder = log_to_wandb(atlas["runs"], atlas["methods"], figures, tmp_path)
    wandb.teardown()  # the run file is complete once wandb's service has shut down
    run = read_offline_run(folder)
    assert run.group == "atlas"
    logged = {k: v for row in run.history for k, v in row.items()}
    assert logged["atlas/runs/_type"] == logged["atlas/methods/_type"] == "table-file"
    assert logged["atlas/runs/nrows"] == 4 and logged["atlas/methods/nrows"] == 2
    assert all(logged[f"atlas/{name}/_type"] == "image-file" for name in figures)


def test_a_rerun_that_only_reuses_keeps_what_the_training_took(killed_and_rerun):
    out, _, _ = killed_and_rerun
    before = json.loads((out / "atlas.json").read_text())
    again = subprocess.run(
        atlas_cmd(out, *GRID), cwd=out.parent, env=env_for(out.parent), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    atlas = json.loads((out / "atlas.json").read_text())
    assert atlas["trained"] == 0 and atlas["reused"] == 4
    assert atlas["invocations"][:-1] == before["invocations"]
    assert atlas["invocations"][-2]["trained"] == 3
    wall = before["invocations"][-1]["wall_s"] / 60
    assert (
        f"Earlier commands into this directory trained 3 runs in {wall:.1f} min"
        in (out / "atlas.md").read_text()
    )
    assert atlas["runs"] == before["runs"]  # the same runs read the same way
