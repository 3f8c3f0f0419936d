"""Preemption: a signal at a random step → checkpoint, status "preempted", exit code 3, and a
resume that ends exactly where an uninterrupted run ends; Slurm requeue through scontrol."""

import json
import os
import random
import signal
import time

from tests.train.fixtures import (
    assert_same_trajectory,
    build_synthetic_data,
    launch,
    step_records,
    synthetic_factories,
    tiny_config,
    worker_env,
)
from weyl.train import PREEMPTED_EXIT_CODE, run_training
from weyl.train.checkpoint import latest_checkpoint
from weyl.train.signals import requeue_slurm_job

KW = dict(max_steps=30, ckpt_every=10, eval_every=10)


def _wait_for_step(path, step, proc, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file():
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if lines and lines[-1].get("step", 0) >= step:
                return
        time.sleep(0.02)
    raise AssertionError(f"the run never reached step {step}")


def test_sigusr1_at_a_random_step_checkpoints_and_resumes_to_the_same_loss(tmp_path):
    baseline = run_training(tiny_config(tmp_path / "base", **KW), factories=synthetic_factories())
    run = tmp_path / "run"
    cfg = tiny_config(run, **KW)
    at = random.Random().randint(2, 15)
    proc = launch(cfg, env=worker_env(WEYL_TEST_STEP_SLEEP="0.1"), wait=False)
    try:
        _wait_for_step(run / "metrics.jsonl", at, proc)
        proc.send_signal(signal.SIGUSR1)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == PREEMPTED_EXIT_CODE, out[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "preempted" and status["reason"] == "signal SIGUSR1"
    assert at <= status["step"] < KW["max_steps"]
    assert latest_checkpoint(run / "checkpoints").name == f"step_{status['step']:08d}"
    resumed = run_training(cfg, factories=synthetic_factories())
    assert resumed["state"] == "finished" and resumed["final_loss"] == baseline["final_loss"]
    assert_same_trajectory(step_records(run), step_records(tmp_path / "base"))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def _fake_scontrol(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_requeue_calls_scontrol_for_this_job(tmp_path, monkeypatch):
    calls = _fake_scontrol(tmp_path, monkeypatch)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert requeue_slurm_job()
    assert calls.read_text().splitlines() == ["requeue 4242", "update JobId=4242 StartTime=now"]


def test_sigusr2_in_process_preempts_and_requeues_under_slurm(tmp_path, monkeypatch):
    calls = _fake_scontrol(tmp_path, monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "77")

    def data_that_gets_preempted(cfg, **kw):
        bundle = build_synthetic_data(cfg, **kw)
        stream, calls_before = bundle.train, {"n": 0}

        class Signalling:  # the signal lands while update 5's batch is being read
            def __next__(self):
                calls_before["n"] += 1
                if calls_before["n"] == 5:
                    os.kill(os.getpid(), signal.SIGUSR2)
                return next(stream)

            def state_dict(self):
                return stream.state_dict()

            def load_state_dict(self, s):
                stream.load_state_dict(s)

        bundle.train = Signalling()
        return bundle

    factories = synthetic_factories()
    factories.build_data = data_that_gets_preempted
    summary = run_training(tiny_config(tmp_path / "run", **KW), factories=factories, requeue=True)
    assert summary["state"] == "preempted" and summary["exit_code"] == PREEMPTED_EXIT_CODE
    assert summary["step"] == 5  # acted on at the boundary after the update it arrived in
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_00000005"
    assert calls.read_text().splitlines() == ["requeue 77", "update JobId=77 StartTime=now"]
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # handlers restored
