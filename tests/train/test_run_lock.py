"""One run per directory: a second launch is refused, a killed run's lock is taken over."""

import json
import os
import platform
import signal

import pytest
import yaml

from tests.train.cli_runs import TINY, reference_run, weyl_train
from tests.train.fixtures import assert_same_trajectory, step_records
from weyl.cli import main as weyl_main
from weyl.report.run_data import load_run
from weyl.train.loggers import read_jsonl
from weyl.train.run_lock import RunDirBusy, RunDirLock, lock_is_free, take_over_killed_run
from weyl.train.run_status import read_status, write_status


def test_a_held_run_dir_refuses_a_second_lock_naming_the_holder(tmp_path):
    with RunDirLock(tmp_path):
        assert lock_is_free(tmp_path) is False
        with pytest.raises(RunDirBusy) as err:
            RunDirLock(tmp_path).acquire(attempts=1)
        text = str(err.value)
        assert f"pid {os.getpid()} on host {platform.node()}, since " in text
        assert "\n" not in text and "run_dir=" in text
    assert lock_is_free(tmp_path) is True
    RunDirLock(tmp_path).acquire()  # released: free for the next run


def test_report_shows_killed_for_a_running_status_nobody_holds(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    write_status(tmp_path, "running", 1)
    assert load_run(tmp_path).status["state"] == "running"  # no lock file: an older weyl
    with RunDirLock(tmp_path):
        assert load_run(tmp_path).status["state"] == "running"
    assert load_run(tmp_path).status["state"] == "killed"


def test_take_over_marks_a_dead_run_killed_near_its_furthest_step(tmp_path):
    write_status(tmp_path, "running", 4)
    (tmp_path / "checkpoints" / "step_00000008").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 9, "loss": 1.0}\n{"step": 10, "lo')
    assert take_over_killed_run(tmp_path) == 9  # the torn line of step 10 is no record
    status = read_status(tmp_path)
    assert status["state"] == "killed" and status["step"] == 9 and "kill -9" in status["reason"]
    # the event starts a new line after the torn one and is stamped at the newest checkpoint
    assert read_jsonl_tolerant(tmp_path / "metrics.jsonl")[-1] == {
        "step": 8,
        "event": "killed",
        "near_step": 9,
    }
    assert take_over_killed_run(tmp_path) is None  # a recorded outcome is left alone


def read_jsonl_tolerant(path):
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_two_weyl_train_into_one_run_dir_one_is_refused(tmp_path, kjv_data):
    data = kjv_data
    run = tmp_path / "run"
    run.mkdir()
    # started at once, different lr; each step sleeps so that the winner is alive for the loser
    procs = {
        lr: weyl_train(run, data, f"optim.lr={lr}", wait=False, WEYL_TEST_STEP_SLEEP="0.5")
        for lr in ("0.003", "0.001")
    }
    try:
        outs = {lr: p.communicate(timeout=240) for lr, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    codes = {lr: p.returncode for lr, p in procs.items()}
    assert sorted(codes.values()) == [0, 2], (codes, outs)
    winner = next(lr for lr, c in codes.items() if c == 0)
    loser = next(lr for lr, c in codes.items() if c == 2)
    lines = [line for line in outs[loser][1].splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"pid {procs[winner].pid} on host {platform.node()}" in lines[0]
    assert lines[0].startswith(f"weyl train: run_dir {run} is in use by another weyl run")
    # everything in the run dir is the winner's
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == float(winner)
    assert not list(run.glob("config.*.yaml"))
    assert step_records(run)[1]["lr"] == float(winner) and max(step_records(run)) == 12
    assert len((run / "commands.log").read_text().splitlines()) == 1
    assert read_status(run)["state"] == "finished"


def test_a_killed_run_is_marked_killed_and_resumed_by_the_next_launch(
    tmp_path, monkeypatch, capsys, kjv_data
):
    data = kjv_data
    reference_run(tmp_path / "base", data, monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    killed = weyl_train(run, data, WEYL_TEST_KILL_AT_STEP="6")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert read_status(run)["state"] == "running"  # what a kill -9 leaves
    assert load_run(run).status["state"] == "killed"  # weyl report already knows better

    import weyl.train

    real = weyl.train.run_training
    seen = []

    def spy(cfg, **kw):  # status.json as the resumed training starts
        seen.append(read_status(run))
        return real(cfg, **kw)

    monkeypatch.setattr(weyl.train, "run_training", spy)
    capsys.readouterr()
    assert weyl_main(["train", *TINY, f"run_dir={run}"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "weyl train: previous run was killed near step 6; status.json corrected from running "
        "to killed"
    ]
    assert seen[0]["state"] == "killed" and seen[0]["step"] == 6
    assert read_status(run)["state"] == "finished"
    assert_same_trajectory(step_records(run), step_records(tmp_path / "base"))
    events = [r for r in read_jsonl(run / "metrics.jsonl") if "event" in r]
    assert events == [{"step": 4, "event": "killed", "near_step": 6}]


def test_lock_is_released_after_each_run_of_one_process(tmp_path, monkeypatch, capsys, kjv_data):
    """Hydra multirun runs jobs one after another in one process: each must free its dir."""
    monkeypatch.setenv("WEYL_DATA_DIR", str(kjv_data))
    for _ in range(2):
        assert weyl_main(["train", *TINY, "trainer.max_steps=1", f"run_dir={tmp_path}/r"]) == 0
        assert lock_is_free(tmp_path / "r") is True
