"""Fault injection through the installed ``weyl`` script: every fault ends in one line on stderr,
the exit code of its outcome, a true status.json, and nothing earlier lost.

The runs are the smoke recipe (2-layer GPT on the embedded KJV characters) shortened to a few
steps, one torch thread per process so that a resumed run can be compared bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from weyl.train.exit_codes import (
    BAD_INPUT,
    CRASHED,
    ERROR,
    FINISHED,
    INTERRUPTED,
    PREEMPTED,
    worst_exit_code,
)

REPO = Path(__file__).resolve().parents[2]
WEYL = Path(sys.executable).parent / "weyl"
SHORT = [
    "recipe=smoke/gpt_tiny",
    "logger.progress=false",
    "diagnostics.enabled=false",
    "trainer.max_steps=12",
    "trainer.log_every=1",
    "trainer.eval_every=100",
    "trainer.ckpt_every=100",
]


@pytest.fixture(scope="module")
def base_env(tmp_path_factory) -> dict[str, str]:
    from weyl.data.kjv import prepare_kjv

    data_dir = tmp_path_factory.mktemp("data")
    prepare_kjv(data_dir / "kjv_char", "char")  # once, so no run prints the preparation
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEYL_", "SLURM_", "WANDB_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]),
        WEYL_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
    )
    return env


def weyl(args: list[str], env: dict[str, str], **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(WEYL), *args],
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )


def one_line(stderr: str) -> str:
    """The single stderr line of a fault (and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    return {r["step"]: r["loss"] for r in records if "event" not in r and "loss" in r}


def _default_sigint() -> None:
    # A suite started in the background (`make test &`, nohup, some CI runners) inherits
    # SIGINT ignored, and Python keeps it ignored: give the child a terminal's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args: list[str], env: dict[str, str], **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(WEYL), *args],
        env={**env, **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=_default_sigint,
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.communicate()[1][-3000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the run")


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


# ------------------------------------------------------------------ bad input: exit 2, one line


@pytest.fixture
def broken_recipe():
    folder = REPO / "recipes" / f"_test_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "bad.yaml").write_text("name: bad\noptim:\n  lr: [1e-3\ntrainer:\n  max_steps: 2\n")
    yield f"{folder.name}/bad", folder / "bad.yaml"
    (folder / "bad.yaml").unlink()
    folder.rmdir()


def test_recipe_yaml_syntax_error_names_file_and_line(base_env, broken_recipe):
    name, path = broken_recipe
    for args in ([f"recipe={name}"], ["-m", f"recipe={name}", "optim.lr=1e-3,2e-3"]):
        r = weyl(["train", *args], base_env)
        assert r.returncode == BAD_INPUT
        line = one_line(r.stderr)
        # the parser stops at line 4 column 8 (the ':' after "trainer" inside the open list)
        assert f"{path}:4:8: YAML syntax error" in line and "expected ',' or ']'" in line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("=5", "no key before '='"),
        ("optim.lr=", "optim.lr: expected float"),
        ("foo", "'foo' is not key=value (e.g. optim.lr=1e-3); see https://hydra.cc"),
        ("x=[1,", "'x=[1,': no viable alternative"),
    ],
)
def test_malformed_override_is_one_line(base_env, override, expected):
    r = weyl(["train", "recipe=smoke/gpt_tiny", override], base_env)
    assert r.returncode == BAD_INPUT and expected in one_line(r.stderr)


def test_unquoted_run_dir_with_a_space_gets_the_quoting_hint_and_quoted_works(base_env, tmp_path):
    r = weyl(["train", "recipe=smoke/gpt_tiny", f"run_dir={tmp_path}/a", "b"], base_env)
    assert r.returncode == BAD_INPUT
    assert f"quote the whole override: 'run_dir={tmp_path}/a b'" in one_line(r.stderr)
    run = tmp_path / "a b"
    r = weyl(["train", *SHORT, f"run_dir={run}", "trainer.max_steps=2"], base_env)
    assert r.returncode == FINISHED and not r.stderr.strip(), r.stderr[-3000:]
    assert status(run)["state"] == "finished" and status(run)["step"] == 2


def _token_set(folder: Path, top_id: int, vocab: int) -> None:
    from weyl.data.token_bins import write_meta, write_token_file

    ids = np.arange(3000) % (top_id + 1)
    for split in ("train", "val"):
        write_token_file(folder / f"{split}.bin", [ids], ids.size)
    splits = {s: {"tokens": int(ids.size)} for s in ("train", "val")}
    write_meta(folder, {"tokenizer": "char", "vocab_size": vocab, "splits": splits})


@pytest.mark.parametrize("case", ["file", "garbage", "ids_beyond_vocab"])
def test_bad_data_path_is_one_line_naming_the_path_and_the_prepare_command(
    base_env, tmp_path, case
):
    data = tmp_path / "data"
    if case == "file":
        data.write_text("not a directory")
        expected = f"data.path={data} is a file"
    elif case == "garbage":
        data.mkdir()
        rng = np.random.default_rng(0)
        for name, size in (("train.bin", 4000), ("val.bin", 800), ("meta.json", 300)):
            (data / name).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        expected = f"{data}/meta.json is not JSON"
    else:
        data.mkdir()
        _token_set(data, top_id=150, vocab=100)  # meta claims 100 ids, the bins hold up to 150
        expected = f"{data}/train.bin holds token id 150 but its meta.json vocabulary has 100 ids"
    before = {p.name: p.read_bytes() for p in data.iterdir()} if data.is_dir() else None
    run = tmp_path / "run"
    r = weyl(["train", *SHORT, f"data.path={data}", f"run_dir={run}"], base_env)
    assert r.returncode == BAD_INPUT
    line = one_line(r.stderr)
    assert expected in line and "weyl prepare kjv --tokenizer char --out" in line
    st = status(run)
    assert st["state"] == "failed" and expected in st["reason"]
    if before is not None:  # the user's files are left exactly as they were
        assert {p.name: p.read_bytes() for p in data.iterdir()} == before


# ------------------------------------------------------------------ divergence: exit 4


def test_adamw_at_lr_10_is_recorded_crashed_within_5_steps(base_env, tmp_path):
    run = tmp_path / "run"
    r = weyl(["train", *SHORT, "optim=adamw", "optim.lr=10", f"run_dir={run}"], base_env)
    assert r.returncode == CRASHED
    line = one_line(r.stderr)
    st = status(run)
    assert st["state"] == "crashed" and 1 <= st["step"] <= 5
    # ln(128) = 4.852: the bound of the default factor 10 is 48.52
    assert "divergence: loss" in st["reason"] and "> 48.52 = 10 x ln(128)" in st["reason"]
    assert st["reason"] in line
    # the diverged update was neither applied nor logged as a step
    assert max(losses(run)) == st["step"] - 1


# ------------------------------------------------------------------ Ctrl-C: exit 130


def test_ctrl_c_checkpoints_and_the_rerun_matches_an_uninterrupted_run_bitwise(base_env, tmp_path):
    base, run = tmp_path / "base", tmp_path / "run"
    assert weyl(["train", *SHORT, f"run_dir={base}"], base_env).returncode == FINISHED
    proc = start(["train", *SHORT, f"run_dir={run}"], base_env, WEYL_TEST_STEP_SLEEP="0.2")
    wait_for(lambda: logged_steps(run) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED
    st = status(run)
    assert st["state"] == "interrupted" and 3 <= st["step"] < 12
    assert one_line(err) == (
        f"weyl train: interrupted at step {st['step']}; checkpoint saved in {run}; "
        "rerun the same command to continue"
    )
    assert [p.name for p in (run / "checkpoints").iterdir()] == [f"step_{st['step']:08d}"]
    r = weyl(["train", *SHORT, f"run_dir={run}"], base_env)
    assert r.returncode == FINISHED and status(run)["state"] == "finished"
    assert losses(run) == losses(base) and len(losses(base)) == 12


def test_second_ctrl_c_aborts_at_once_without_a_traceback(base_env, tmp_path):
    run = tmp_path / "run"
    proc = start(["train", *SHORT, f"run_dir={run}"], base_env, WEYL_TEST_STEP_SLEEP="0.5")
    wait_for(lambda: logged_steps(run) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED
    st = status(run)
    assert st["state"] == "interrupted" and "second Ctrl-C" in st["reason"]
    assert "aborted by a second Ctrl-C" in one_line(err)
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


def test_ctrl_c_during_set_up_exits_130_in_one_line(base_env, tmp_path):
    run = tmp_path / "run"
    proc = start(["train", *SHORT, f"run_dir={run}"], base_env, WEYL_TEST_SETUP_SLEEP="60")
    wait_for(lambda: (run / "metrics.jsonl").is_file(), proc)  # opened just before the pause
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == INTERRUPTED
    assert one_line(err) == (
        "weyl train: interrupted (Ctrl-C) before training started; nothing was trained"
    )
    assert status(run)["state"] == "interrupted" and status(run)["step"] == 0


# ------------------------------------------------------------------ unexpected errors: exit 1


def test_unexpected_error_in_training_is_one_line_and_status_failed(base_env, tmp_path):
    run = tmp_path / "run"
    args = ["train", *SHORT, f"run_dir={run}"]
    r = weyl(args, base_env, WEYL_TEST_RAISE_AT_STEP="2")
    assert r.returncode == ERROR
    assert one_line(r.stderr) == (
        "weyl train: RuntimeError: injected fault after step 2 (WEYL_DEBUG=1 for the traceback)"
    )
    st = status(run)
    assert st["state"] == "failed" and st["reason"] == "RuntimeError: injected fault after step 2"
    assert max(losses(run)) == 2  # what was logged before the error is kept


def test_any_command_ends_an_uncaught_exception_in_one_line_unless_weyl_debug(monkeypatch, capsys):
    import weyl.cli
    import weyl.commands.registry

    def fails(argv):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(weyl.commands.registry.COMMANDS, "boom", (f"{__name__}:fails", "test"))
    monkeypatch.setattr(sys.modules[__name__], "fails", fails, raising=False)
    monkeypatch.delenv("WEYL_DEBUG", raising=False)
    assert weyl.cli.main(["boom"]) == ERROR
    err = capsys.readouterr().err
    assert err == (
        "weyl boom: OSError: [Errno 28] No space left on device (WEYL_DEBUG=1 for the traceback)\n"
    )
    monkeypatch.setenv("WEYL_DEBUG", "1")
    with pytest.raises(OSError, match="No space left"):
        weyl.cli.main(["boom"])


def test_sweep_exit_code_is_the_most_serious_of_its_jobs():
    assert worst_exit_code([]) == FINISHED
    assert worst_exit_code([FINISHED, PREEMPTED, CRASHED]) == CRASHED
    assert worst_exit_code([CRASHED, BAD_INPUT, FINISHED]) == BAD_INPUT
    assert worst_exit_code([BAD_INPUT, ERROR]) == ERROR
    assert worst_exit_code([ERROR, INTERRUPTED, FINISHED]) == INTERRUPTED
    assert worst_exit_code([FINISHED, 77]) == ERROR  # an unknown code is an error


# ------------------------------------------------------------------ wandb


def test_wandb_mode_comes_from_the_config_then_the_environment_then_offline(monkeypatch):
    from weyl.train.loggers import resolve_wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode(None) == "online"
    assert resolve_wandb_mode("disabled") == "disabled"  # an explicit value wins
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's own alias
    assert resolve_wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "cloud")
    with pytest.raises(ValueError, match="WANDB_MODE='cloud' is unknown"):
        resolve_wandb_mode(None)


def test_wandb_online_from_the_environment_without_network_falls_back_in_one_line(
    base_env, tmp_path
):
    run = tmp_path / "run"
    t0 = time.time()
    r = weyl(
        ["train", *SHORT, "logger=wandb", "trainer.max_steps=2", f"run_dir={run}"],
        base_env,
        WANDB_MODE="online",  # what the README promises turns wandb online
        WANDB_API_KEY="0" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens there
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
    )
    elapsed = time.time() - t0
    assert r.returncode == FINISHED, r.stderr[-3000:]
    line = one_line(r.stderr)
    assert line.startswith("weyl: wandb online failed (") and "logging offline" in line
    assert status(run)["state"] == "finished"
    assert list((run / "wandb").glob("offline-run-*"))
    assert elapsed < 90, elapsed  # wandb alone used to block ~104 s before its traceback


def torch_log_line(line: str) -> bool:
    """A line of torch's own logging (``W1130 02:15:18.813000 11230 torch/...``)."""
    head = line.split(" ", 1)[0]
    return len(head) == 5 and head[0] in "DIWEF" and head[1:].isdigit()


@pytest.mark.distributed
def test_ctrl_c_under_weyl_torchrun_checkpoints_every_rank_and_exits_130(base_env, tmp_path):
    # A terminal's Ctrl-C goes to the whole foreground process group: the launcher and its
    # workers; torchrun then forwards SIGINT to the workers once more (the echo they ignore).
    from tests.train.fixtures import free_port

    run = tmp_path / "run"
    cmd = [
        str(WEYL), "torchrun", "--nproc-per-node=2", f"--master-port={free_port()}",
        "train", *SHORT, "trainer.device=cpu", f"run_dir={run}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env={**base_env, "WEYL_TEST_STEP_SLEEP": "0.3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: logged_steps(run) >= 3, proc, timeout=240)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    st = status(run)
    assert st["state"] == "interrupted" and "second Ctrl-C" not in st["reason"], err[-3000:]
    step_dir = run / "checkpoints" / f"step_{st['step']:08d}"
    assert {"rank_00000.pt", "rank_00001.pt", "state.pt"} <= {p.name for p in step_dir.iterdir()}
    # rank 0's line alone: no SignalException traceback, no "closing signal" warnings
    line = one_line("\n".join(x for x in err.splitlines() if not torch_log_line(x)))
    assert line.startswith(f"weyl train: interrupted at step {st['step']}; checkpoint saved")
    assert not [x for x in err.splitlines() if torch_log_line(x)], err[-3000:]
    assert proc.returncode == INTERRUPTED


@pytest.mark.distributed
def test_a_run_that_diverges_under_weyl_torchrun_exits_crashed_with_one_line(base_env, tmp_path):
    from tests.train.fixtures import free_port

    run = tmp_path / "run"
    cmd = [
        str(WEYL), "torchrun", "--nproc-per-node=2", f"--master-port={free_port()}",
        "train", *SHORT, "trainer.device=cpu", "optim.name=adamw", "optim.lr=10", f"run_dir={run}",
    ]  # fmt: skip
    r = subprocess.run(
        cmd,
        env=base_env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    # torchrun alone: ChildFailedError's table and exit 1
    assert r.returncode == CRASHED, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr, r.stderr[-3000:]
    line = one_line("\n".join(x for x in r.stderr.splitlines() if not torch_log_line(x)))
    assert line.startswith("crash at step ") and "divergence" in line, line
    assert status(run)["state"] == "crashed"


def test_weyl_torchrun_rejects_a_bad_config_before_starting_a_worker(base_env, tmp_path):
    r = weyl(
        [
            "torchrun",
            "--nproc-per-node=2",
            "train",
            *SHORT,
            "optim.lr=-1",
            f"run_dir={tmp_path / 'r'}",
        ],
        base_env,
    )
    assert r.returncode == BAD_INPUT
    assert one_line(r.stderr) == "weyl train: optim.lr: must be > 0, got -1.0"
    assert not (tmp_path / "r").exists()  # no worker ran
    r = weyl(["torchrun", "--nproc-per-node=2", "frobnicate"], base_env)
    line = one_line(r.stderr)
    assert r.returncode == BAD_INPUT
    assert line.startswith("weyl torchrun: unknown weyl command 'frobnicate'; choose one of: ")
    assert {"demo", "train", "atlas"} <= set(
        line.split("choose one of: ")[1].split(" (")[0].split(", ")
    )
    r = weyl(["torchrun", "--nproc-per-node"], base_env)
    assert r.returncode == BAD_INPUT and "--nproc-per-node" in one_line(r.stderr)


def test_weyl_torchrun_exit_codes_follow_the_signal_and_the_workers():
    from weyl.commands.torchrun import exit_code_for_failures, exit_code_for_signal

    # the code one process exits with after the same signal (weyl.train.signals)
    assert exit_code_for_signal(signal.SIGINT) == 130 == INTERRUPTED
    assert {exit_code_for_signal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)} == {
        PREEMPTED
    }
    assert exit_code_for_signal(signal.SIGHUP) == 128 + 1
    # rank 0 diverged (4); torchrun then SIGTERMed rank 1 before it finished its own line
    assert exit_code_for_failures({0: CRASHED, 1: -signal.SIGTERM}) == (CRASHED, None)
    assert exit_code_for_failures({0: BAD_INPUT, 1: ERROR}) == (ERROR, None)
    code, line = exit_code_for_failures({1: -signal.SIGKILL, 0: -signal.SIGTERM})
    assert code == ERROR
    assert line.startswith("rank 0 was killed by SIGTERM (and 1 more) before saying why")
    assert exit_code_for_failures({3: 77})[1].startswith("rank 3 exited with 77 before saying why")


def test_demo_stops_at_a_ctrl_c_with_130_and_runs_nothing_after_it(tmp_path, monkeypatch, capsys):
    from weyl.commands import demo

    started = []

    def interrupted_run(recipe, run_dir, overrides, progress):
        started.append(recipe)
        return {"state": "interrupted", "step": 7, "exit_code": INTERRUPTED}

    monkeypatch.setattr(demo, "run_recipe", interrupted_run)
    with pytest.raises(SystemExit) as stop:
        demo.main(["--steps", "10", "--out", str(tmp_path), "--no-progress"])
    assert stop.value.code == INTERRUPTED and started == ["cpu/adamw_nowarmup"]
    assert capsys.readouterr().err == (
        "weyl demo: interrupted at step 7 of adamw_nowarmup; checkpoint saved; "
        "rerun the same command to continue\n"
    )


def test_a_second_ctrl_c_under_torchrun_counts_only_after_the_forwarding_echo(monkeypatch):
    from weyl.train import signals

    clock = iter([100.0, 100.01, 103.0])  # terminal, torchrun's forwarded copy, user again
    monkeypatch.setattr(signals.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    flag = signals.PreemptionFlag()
    flag._handle_sigint(signal.SIGINT, None)
    flag._handle_sigint(signal.SIGINT, None)  # the echo: still just a stop request
    assert flag.stop_kind == "interrupt"
    with pytest.raises(KeyboardInterrupt):
        flag._handle_sigint(signal.SIGINT, None)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    single = signals.PreemptionFlag()
    clock = iter([5.0, 5.01])
    single._handle_sigint(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):  # a single process has no echo: abort at once
        single._handle_sigint(signal.SIGINT, None)


def test_divergence_bound_holds_from_the_first_update_and_comes_from_the_model_outputs():
    import math
    from types import SimpleNamespace

    from weyl.train.crash_guard import CrashGuard, divergence_bound_for

    model = SimpleNamespace(vocab_size=128)
    data = SimpleNamespace(vocab_size=65, num_classes=None)
    bound, origin = divergence_bound_for(3.0, model, data)
    assert bound == pytest.approx(3 * math.log(128)) and origin == "3 x ln(128)"
    vit = SimpleNamespace(num_classes=10)
    assert divergence_bound_for(2.0, vit, data)[0] == pytest.approx(2 * math.log(10))
    assert divergence_bound_for(0.0, model, data) == (None, "")
    guard = CrashGuard(spike_window=50, divergence_bound=bound, bound_origin=origin)
    assert guard.check(14.5) is None  # the very first update, below 14.56
    assert "divergence: loss 14.6 > 14.56 = 3 x ln(128)" in guard.check(14.6)
    resumed = CrashGuard(spike_window=50, divergence_bound=bound, bound_origin=origin)
    resumed.load_state_dict(guard.state_dict())
    assert (
        resumed.state_dict()
        == guard.state_dict()
        == {
            "history": [14.5],
            "divergence_bound": bound,
        }
    )
