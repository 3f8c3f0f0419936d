"""Workers stop when their launcher dies (torchrun starts them in their own session, so a
``kill -9`` of torchrun's process group does not reach them)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.train.fixtures import launch, step_records, tiny_config, worker_env
from tests.train.test_train_signals import _wait_for_step
from weyl.train.checkpoint import latest_checkpoint, step_dir_name

pytestmark = pytest.mark.distributed


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigkill_of_torchrun_stops_both_workers_at_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(run, max_steps=500, ckpt_every=100, micro_batch_size=2, eval_every=500)
    cfg.trainer.requeue = True
    # As if under Slurm: a requeue would call this scontrol, which leaves a trace.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
    scontrol.chmod(0o755)
    env = worker_env(
        WEYL_TEST_STEP_SLEEP="0.1",
        SLURM_JOB_ID="4242",
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    proc = launch(cfg, nproc=2, env=env, wait=False)
    pids: list[int] = []
    try:
        _wait_for_step(run / "metrics.jsonl", 3, proc)
        pids = [int((run / f"pid.rank{r}").read_text()) for r in (0, 1)]
        assert os.getsid(pids[0]) != os.getsid(proc.pid)  # out of reach of torchrun's group
        proc.kill()  # SIGKILL to torchrun alone; the workers get no signal from anyone
        killed_at = time.monotonic()
        # the workers hold the pipe's write end: it closes when the last of them exits
        out, _ = proc.communicate(timeout=20)
        stopped_in = time.monotonic() - killed_at
        assert not any(_alive(p) for p in pids), out[-3000:]
    finally:
        proc.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert stopped_in < 10, out[-3000:]
    assert "launcher" in out and "is gone" in out, out[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "preempted", out[-3000:]
    # whoever killed the launcher meant the job to stop: no requeue of it
    assert status["reason"].startswith("launcher (pid ") and "not requeued" in status["reason"]
    assert not (tmp_path / "scontrol.calls").exists()
    last = max(step_records(run))
    assert 3 <= last == status["step"] < 500
    assert latest_checkpoint(run / "checkpoints").name == step_dir_name(last)


ORPHAN = """
import os, signal, sys, time
from weyl.train.launcher_watch import watch_launcher
# a rank stuck where SIGTERM cannot stop it (say, in a collective with a dead peer)
signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM survived", flush=True))
assert watch_launcher(grace_s=1.0)
print(os.getpid(), flush=True)
time.sleep(60)
"""


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace():
    # launcher → worker; the launcher dies, the worker outlives SIGTERM, then gets SIGKILL
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {ORPHAN!r}])",
        ],
        env=worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    worker = 0
    try:
        worker = int(launcher.stdout.readline())
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
        out = launcher.stdout.read()  # EOF: the worker, the last writer, is gone
        assert "is gone" in out and "SIGTERM survived" in out, out
    finally:
        launcher.kill()
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)
