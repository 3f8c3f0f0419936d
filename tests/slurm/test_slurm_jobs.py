"""Real Slurm jobs on the session's local cluster (see conftest.py):

- slurm/train.sbatch trains the tiny recipe as one srun task running torchrun with 2 gloo ranks;
- a USR1 to the batch shell travels trap → srun → torchrun → workers, the trainer checkpoints
  and requeues the job, and the rerun (SLURM_RESTART_COUNT=1) resumes in the same run dir and
  ends on exactly the loss of the uninterrupted job;
- ``weyl train -m ... hydra/launcher=slurm`` submits through hydra-submitit-launcher; the 2-task
  submitit job, preempted by USR2 (submitit's signal) mid-run, requeues, resumes and trains to
  that same loss, and ``weyl train -m`` returns once the requeued job reported its result;
- ``weyl atlas ... hydra/launcher=slurm`` sends each method's runs as Slurm jobs into the atlas's
  own run folders and writes its outputs from them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.slurm.local_slurm import SBATCH_TEMPLATE, LocalSlurm, free_port, read_metrics
from weyl.train.checkpoint import latest_checkpoint
from weyl.train.run_status import read_status

pytestmark = pytest.mark.distributed

STEPS = 120
# The tiny recipe, shortened; log every step so whole trajectories can be compared.
TRAIN_ARGS = [
    "recipe=smoke/gpt_tiny",
    f"trainer.max_steps={STEPS}",
    "trainer.log_every=1",
    "trainer.eval_every=60",
    "trainer.ckpt_every=60",
    "trainer.device=cpu",
    "diagnostics.enabled=false",
    "logger.progress=false",
]
JOB_TIMEOUT_S = 120


def _job_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "WEYL_PYTHON": sys.executable,
        "WEYL_NPROC_PER_NODE": "2",
        "WEYL_RDZV_PORT": str(free_port()),
        "WEYL_DATA_DIR": str(data_dir),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def _submit_template(
    cluster: LocalSlurm, work: Path, run_dir: Path, data_dir: Path, **env: str
) -> tuple[str, Path]:
    out = work / f"{run_dir.name}.out"
    job_id = cluster.sbatch(
        f"--job-name={run_dir.name}",
        f"--output={out}",
        f"--chdir={work}",
        str(SBATCH_TEMPLATE),
        *TRAIN_ARGS,
        f"run_dir={run_dir}",
        env=_job_env(data_dir, **env),
        cwd=work,
    )
    return job_id, out


def _explain(cluster: LocalSlurm, out: Path, run_dir: Path) -> str:
    log = out.read_text() if out.is_file() else "(no job output)"
    return f"job output:\n{log[-4000:]}\nstatus: {read_status(run_dir)}\n{cluster.log_tail(15)}"


@pytest.fixture(scope="module")
def reference_job(
    slurm_cluster: LocalSlurm, slurm_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """One uninterrupted sbatch job of the template, run to the end."""
    work = tmp_path_factory.mktemp("reference")
    run_dir = work / "reference"
    started = time.monotonic()
    job_id, out = _submit_template(slurm_cluster, work, run_dir, slurm_data_dir)
    try:
        info = slurm_cluster.wait(job_id, JOB_TIMEOUT_S)
    except TimeoutError as err:
        pytest.fail(f"{err}\n{_explain(slurm_cluster, out, run_dir)}")
    return {
        "info": info,
        "run_dir": run_dir,
        "out": out,
        "seconds": time.monotonic() - started,
        "explain": _explain(slurm_cluster, out, run_dir),
    }


def test_sbatch_template_trains_the_tiny_recipe_on_two_ranks(reference_job):
    info, run_dir = reference_job["info"], reference_job["run_dir"]
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", reference_job["explain"]
    assert info["Restarts"] == "0"
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["step"] == STEPS, reference_job["explain"]
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["slurm_job_id"] == info["JobId"]
    # A freshly initialised LM predicts near-uniformly over the model's (padded) vocabulary:
    # the first loss is about ln(vocab_size).
    vocab = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["vocab_size"]
    first, last = records[0]["loss"], records[-1]["loss"]
    assert abs(first - math.log(vocab)) < 0.1, (first, math.log(vocab))
    assert math.isfinite(last) and last < first - 0.5, (first, last)
    assert status["final_loss"] == last
    log = reference_job["out"].read_text()
    assert f"job {info['JobId']} restart 0 on 1 node(s) × 2" in log
    assert "training step exited with 0" in log


def _wait_for_step(run_dir: Path, step: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").is_file():
            records = read_metrics(run_dir)
            if records and records[-1]["step"] >= step:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{run_dir} never logged step {step}")


def _await_preemption(run_dir: Path, timeout: float) -> tuple[dict, str | None, list[str]]:
    """Poll for status "preempted"; return it, the newest checkpoint then, and the metric lines.

    The requeued rerun needs seconds to start, so the state stays visible meanwhile.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(run_dir) or {}
        if status.get("state") == "preempted":
            ckpt = latest_checkpoint(run_dir / "checkpoints")
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            return status, ckpt.name if ckpt else None, lines
        time.sleep(0.05)
    raise TimeoutError(f"{run_dir} never reported state 'preempted'")


def _assert_resumed_not_restarted(run_dir: Path, status: dict, ckpt: str | None, lines: list):
    """The checkpoint of the preempted step was written, and the rerun continued after it."""
    assert ckpt == f"step_{status['step']:08d}", (ckpt, status)
    after = (run_dir / "metrics.jsonl").read_text().splitlines()
    # A rerun from scratch would rewrite steps 1..N with new timings (elapsed, tokens_per_s).
    assert after[: status["step"]] == lines[: status["step"]]


def test_usr1_to_the_batch_shell_checkpoints_requeues_and_resumes_to_the_same_loss(
    slurm_cluster: LocalSlurm, slurm_data_dir: Path, reference_job, tmp_path: Path
):
    run_dir = tmp_path / "preempted"
    # Slow steps leave time to signal mid-run (sleeping changes no number).
    job_id, out = _submit_template(
        slurm_cluster, tmp_path, run_dir, slurm_data_dir, WEYL_TEST_STEP_SLEEP="0.02"
    )
    explain = lambda: _explain(slurm_cluster, out, run_dir)  # noqa: E731
    try:
        _wait_for_step(run_dir, 10, JOB_TIMEOUT_S)
        slurm_cluster.run("scancel", "--signal=USR1", "--batch", job_id)
        preempted, ckpt, lines = _await_preemption(run_dir, JOB_TIMEOUT_S)
        info = slurm_cluster.wait(job_id, JOB_TIMEOUT_S)
    except TimeoutError as err:
        pytest.fail(f"{err}\n{explain()}")
    # USR1 reached the workers (srun forwarded it, torchrun did not die of it).
    assert preempted["reason"] == "signal SIGUSR1", preempted
    assert 10 <= preempted["step"] < STEPS
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", (info, explain())
    log = out.read_text()
    assert f"job {job_id} restart 0 " in log and f"job {job_id} restart 1 " in log, explain()
    assert "USR1 received" in log
    # Two starts of the same run directory: the first and the requeued one.
    assert len((run_dir / "commands.log").read_text().splitlines()) == 2
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["step"] == STEPS, explain()
    _assert_resumed_not_restarted(run_dir, preempted, ckpt, lines)
    resumed = read_metrics(run_dir)
    reference = read_metrics(reference_job["run_dir"])
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    # Exact resume: every step after the checkpoint reproduces the uninterrupted job bit for bit.
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]
    assert status["final_loss"] == read_status(reference_job["run_dir"])["final_loss"]


def test_hydra_submitit_launcher_trains_a_two_task_job_through_a_usr2_preemption(
    slurm_cluster: LocalSlurm, slurm_data_dir: Path, reference_job, tmp_path: Path
):
    sweep = tmp_path / "sweep"
    env = {
        **slurm_cluster.env,
        "WEYL_DATA_DIR": str(slurm_data_dir),
        "OMP_NUM_THREADS": "1",
        "MASTER_PORT": str(free_port()),
        "WEYL_TEST_STEP_SLEEP": "0.02",
    }
    cmd = [
        sys.executable,
        "-m",
        "weyl.cli",
        "train",
        "-m",
        *TRAIN_ARGS,
        f"run_dir={sweep}",
        "hydra/launcher=slurm",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.timeout_min=5",
    ]
    run_dir = sweep / "0"
    # `weyl train -m` submits, then waits for the job's result.
    submitter = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def job_logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-2500:]}"
            for p in sorted(sweep.glob(".submitit/*/*_log.*"))
        )

    try:
        _wait_for_step(run_dir, 10, JOB_TIMEOUT_S)
        (job_dir,) = [p for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()]
        job_id = job_dir.name
        # What Slurm sends a submitit job before its time limit: USR2 to every task.
        slurm_cluster.run("scancel", "--signal=USR2", job_id)
        preempted, ckpt, lines = _await_preemption(run_dir, JOB_TIMEOUT_S)
        out, _ = submitter.communicate(timeout=JOB_TIMEOUT_S)
    except (TimeoutError, subprocess.TimeoutExpired) as err:
        submitter.kill()
        pytest.fail(f"{err}\n{job_logs()}\n{slurm_cluster.log_tail(15)}")
    explain = f"{out[-3000:]}\n{job_logs()}"
    assert submitter.returncode == 0, explain
    # The result is written just before the tasks exit; the job must then end by itself.
    info = slurm_cluster.wait(job_id, 60)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", (info, explain)
    assert len(list(job_dir.glob("*_log.out"))) == 2, explain  # one log per submitit task
    # The first start was preempted by USR2 at a step boundary, the requeued one resumed.
    assert preempted["reason"] == "signal SIGUSR2" and 10 <= preempted["step"] < STEPS, preempted
    assert len((run_dir / "commands.log").read_text().splitlines()) == 2, explain
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["step"] == STEPS, explain
    _assert_resumed_not_restarted(run_dir, preempted, ckpt, lines)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["slurm_job_id"] == job_id, meta
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    # Same config and world size as the torchrun job ⇒ the same numbers, whoever launched it.
    reference = read_metrics(reference_job["run_dir"])
    assert [r["loss"] for r in records] == [r["loss"] for r in reference]


def test_the_atlas_runs_its_grid_as_slurm_jobs(
    slurm_cluster: LocalSlurm, slurm_data_dir: Path, tmp_path: Path
):
    out = tmp_path / "atlas"
    env = {**slurm_cluster.env, "WEYL_DATA_DIR": str(slurm_data_dir), "WANDB_MODE": "disabled"}
    weyl = str(Path(sys.executable).parent / "weyl")
    grid = ["--methods", "adamw", "adamw2", "--lrs", "0.01", "--widths", "32", "--steps", "20"]
    done = subprocess.run(
        [weyl, "atlas", "--out", str(out), *grid, "hydra/launcher=slurm", "hydra.launcher.timeout_min=5"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=4 * JOB_TIMEOUT_S,
    )  # fmt: skip
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(out.rglob("*_log.*")))
    explain = f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n{logs}\n{slurm_cluster.log_tail(15)}"
    assert done.returncode == 0, explain
    atlas = json.loads((out / "atlas.json").read_text())
    assert [r["run"] for r in atlas["runs"]] == ["adamw_w32_lr0.01_s0", "adamw2_w32_lr0.01_s0"]
    for row in atlas["runs"]:
        run_dir = out / "runs" / row["run"]
        assert read_status(run_dir)["state"] == "finished", explain
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta.get("slurm_job_id"), meta  # trained inside a Slurm job, not by the atlas
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        evals = [r["eval/loss"] for r in map(json.loads, lines) if "eval/loss" in r]
        assert row["final_eval_loss"] == evals[-1]
