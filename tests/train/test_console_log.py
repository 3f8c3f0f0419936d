"""The human-readable training log: what `weyl train > log.txt` leaves in the file (the Slurm
.out case), the crash line, and the console sink's own behaviour on and off a terminal."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from weyl.config import ConfigError
from weyl.config.compose import load_config
from weyl.train import console_log
from weyl.train.console_log import ConsoleLog, step_line

WEYL = Path(sys.executable).parent / "weyl"
STEP_LINE = re.compile(r"^step +(\d+)/(\d+) \| loss (\S+) \| lr (\S+) \| clip (\d+)% \|")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for the module's runs (KJV is prepared there on first use)."""
    return tmp_path_factory.mktemp("data_root")


def train_to_file(run_dir: Path, data_dir: Path, *overrides: str, **env: str) -> str:
    """`weyl train recipe=smoke/gpt_tiny ... > log` through the console script; the log text."""
    log = run_dir.with_suffix(".log")
    with open(log, "w") as out:
        proc = subprocess.run(
            [str(WEYL), "train", "recipe=smoke/gpt_tiny", f"run_dir={run_dir}", *overrides],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "WEYL_DATA_DIR": str(data_dir), **env},
            timeout=600,
        )
    assert "Traceback" not in proc.stderr, proc.stderr
    return log.read_text()


def read_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_log_file_of_a_smoke_run_reads_like_a_training_log(tmp_path: Path, data_dir: Path) -> None:
    from weyl.models import build_model

    run_dir = tmp_path / "run"
    text = train_to_file(run_dir, data_dir)
    lines = text.splitlines()
    assert "\x1b[" not in text and "\r" not in text  # no terminal control codes in a file

    # Banner: recipe, the model's real parameter count, optimizer and its tau.
    cfg = load_config(["recipe=smoke/gpt_tiny"])
    n_params = sum(p.numel() for p in build_model(cfg.model).parameters())
    assert lines[0].startswith("weyl train | recipe smoke/gpt_tiny | name smoke_gpt_tiny")
    assert f"gpt, {n_params:,} parameters" in text
    optimizer = next(line for line in lines if line.strip().startswith("optimizer"))
    assert "adamw2" in optimizer and f"tau {cfg.optim.tau:g}" in optimizer
    assert f"{cfg.trainer.global_batch_size} global" in text

    # One step line per log_every step, in order, with metrics.jsonl's losses to 4 decimals.
    records = {r["step"]: r for r in read_records(run_dir) if "event" not in r}
    steps = [m.groups() for m in map(STEP_LINE.match, lines) if m]
    total, every = cfg.trainer.max_steps, cfg.trainer.log_every
    assert [int(s) for s, *_ in steps] == list(range(every, total + 1, every))
    for step, of, loss, lr, clip in steps:
        record = records[int(step)]
        assert int(of) == total and loss == f"{record['loss']:.4f}"
        assert float(lr) == pytest.approx(record["lr"], rel=1e-2)
        assert int(clip) == round(100 * record["optim/clip_rate"])

    # Eval and diagnostics lines carry the recorded values.
    final = records[total]
    assert f"eval step {total}/{total} | loss {final['eval/loss']:.4f}" in text
    assert f"attn entropy min {final['attn/entropy_min']:.3f}" in text

    # End summary: outcome, final losses, where things are, the exact report command.
    assert f"weyl train finished at step {total}/{total}" in text
    assert f"final train loss {final['loss']:.4f} | eval loss {final['eval/loss']:.4f}" in text
    assert lines[-1].strip().startswith(f"figures    weyl report {run_dir} ")


def test_a_crash_prints_its_line_and_the_crashed_summary(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "crash"
    text = train_to_file(
        run_dir,
        data_dir,
        "trainer.on_crash=stop",
        "trainer.max_steps=20",
        "diagnostics.enabled=false",
        WEYL_TEST_INJECT_NAN_AT_STEP="15",
    )
    assert "CRASH at step 15: non-finite loss (nan)" in text
    assert "weyl train crashed at step 15/20 (non-finite loss (nan))" in text
    assert [m.group(1) for m in map(STEP_LINE.match, text.splitlines()) if m] == ["10"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "crashed" and status["step"] == 15


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


STEP = {"step": 10, "loss": 2.5, "lr": 1e-3, "tokens_per_s": 2000.0, "elapsed": 3.0}
EVAL = {"step": 20, "loss": 2.0, "lr": 1e-3, "eval/loss": 2.25, "eval/ppl": 9.49}


def test_lines_reach_the_file_as_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    with open(path, "w") as stream:  # a buffered file, like a Slurm .out
        log = ConsoleLog("auto", total=40, start=0, unit="tokens", stream=stream)
        log.log(STEP)
        assert path.read_text().startswith("step 10/40 | loss 2.5000 | lr 1.00e-03 |")
        log.log({"step": 23, "event": "crash", "reason": "loss spike", "loss": 9.0})
        log.log(
            {
                "step": 20,
                "event": "rollback",
                "reason": "loss spike",
                "crash_step": 23,
                "rollbacks": 1,
            }
        )
        written = path.read_text().splitlines()
        assert written[1] == "CRASH at step 23: loss spike | loss 9.0000"
        assert written[2].startswith(
            "ROLLBACK to the checkpoint of step 20 after the crash at step 23"
        )


def test_step_line_format_and_image_metrics() -> None:
    record = {
        "step": 40,
        "loss": 3.12449,
        "lr": 6e-4,
        "optim/clip_rate": 0.12,
        "images_per_s": 41234.0,
        "mfu": 0.3125,
    }
    assert step_line(record, 200, "images", 72.0) == (
        "step  40/200 | loss 3.1245 | lr 6.00e-04 | clip 12% | 41.2k img/s | mfu 31.2% | eta 1m12s"
    )
    evals = console_log.eval_line({"step": 5, "eval/loss": 1.5, "eval/top1": 45.2}, 10)
    assert evals == "eval step  5/10 | loss 1.5000 | top1 45.20%"


def test_eta_is_measured_from_the_first_step_line(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 10.0, 30.0])  # created, step 10, step 20
    monkeypatch.setattr(console_log.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    log = ConsoleLog("lines", total=40, start=0, unit="tokens", stream=stream)
    log.log(STEP)  # 10 steps in 10 s since start: 30 left -> 30 s
    log.log({**STEP, "step": 20})  # 10 steps in 20 s since the first line: 20 left -> 40 s
    etas = [line.rsplit("eta ", 1)[1] for line in stream.getvalue().splitlines()]
    assert etas == ["30s", "40s"]


def test_terminal_gets_the_bar_with_lines_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    log = ConsoleLog("auto", total=40, start=0, unit="tokens")
    assert log.bar is not None
    log.banner(["weyl train | recipe smoke/gpt_tiny"])
    log.log(STEP)
    log.log(EVAL)
    log.summary(
        {"state": "finished", "step": 40, "total_steps": 40, "final_loss": 1.9, "run_dir": "/r"}
    )
    shown = terminal.getvalue()
    assert "weyl train | recipe smoke/gpt_tiny" in shown
    assert "eval step 20/40 | loss 2.2500 | ppl 9.49" in shown
    assert "weyl report /r" in shown and "weyl train finished at step 40/40" in shown
    assert "step 10/40 | loss" not in shown  # the bar shows steps, not plain lines


@pytest.mark.parametrize(
    ("mode", "progress", "expect_bar", "expect_lines"),
    [
        ("off", True, False, False),
        ("lines", True, False, True),
        ("auto", False, False, True),
    ],
)
def test_console_modes_on_a_terminal(mode, progress, expect_bar, expect_lines, monkeypatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    log = ConsoleLog(mode, total=40, start=0, unit="tokens", progress=progress)
    log.log(STEP)
    log.close()
    assert (log.bar is not None) == expect_bar
    assert terminal.getvalue().startswith("step 10/40") == expect_lines


def test_unknown_console_mode_is_a_one_line_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"^logger\.console: unknown 'loud'; choose one of: auto, lines, off$"
    ):
        load_config(["recipe=smoke/gpt_tiny", "logger.console=loud"])


def test_a_preempted_run_gets_its_event_line_and_the_resume_hint() -> None:
    stream = io.StringIO()
    log = ConsoleLog("lines", total=40, start=0, unit="tokens", stream=stream)
    log.summary(
        {
            "state": "preempted",
            "step": 11,
            "total_steps": 40,
            "reason": "signal SIGUSR1",
            "final_loss": 4.77,
            "elapsed": 5.5,
            "run_dir": "/r",
        }
    )
    lines = stream.getvalue().splitlines()
    assert lines[0] == "PREEMPTED at step 11: signal SIGUSR1"
    assert lines[1] == "weyl train preempted at step 11/40 (signal SIGUSR1) after 5.5s"
    assert "checkpoint of step 11 saved" in lines[3]


def test_a_config_change_at_relaunch_names_each_key() -> None:
    record = {"step": 20, "event": "config_changed", "changes": {"optim.lr": [0.003, 0.001]}}
    assert console_log.event_line(record) == "CONFIG_CHANGED at step 20: optim.lr 0.003 -> 0.001"
