"""The `weyl` command: subcommand dispatch, help, Hydra passthrough, the run directory."""

import json
import subprocess
import sys

import yaml

from weyl.cli import main
from weyl.commands.registry import COMMANDS


def run_weyl(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "weyl.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_subcommand_is_one_line_error(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert "trian" in err and "train" in err and "\n" not in err


def test_every_subcommand_has_help():
    for name in COMMANDS:
        out = run_weyl(name, "--help")
        assert out.returncode == 0, (name, out.stderr)
        assert "usage" in out.stdout.lower(), name


def test_train_help_lists_groups(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for group in ("recipe:", "scale:", "model:", "optim:", "schedule:", "diagnostics:"):
        assert group in out


def test_hydra_cfg_job_prints_composed_config():
    out = run_weyl("train", "recipe=smoke/gpt_tiny", "optim.tau=0.03", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["optim"]["tau"] == 0.03 and cfg["model"]["family"] == "gpt"


def test_offline_defaults_are_set_without_clobbering_user_choice(monkeypatch):
    from weyl.cli import set_offline_defaults

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    set_offline_defaults()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["WANDB_MODE"] == "online"


def test_run_dir_records_config_command_version_and_commit(tmp_path):
    from weyl.train.run_dir import prepare_run_dir

    run = prepare_run_dir(tmp_path / "r", {"optim": {"lr": 1.0}}, ["weyl", "train", "optim.lr=1"])
    assert yaml.safe_load((run / "config.yaml").read_text()) == {"optim": {"lr": 1.0}}
    assert (run / "command.txt").read_text().strip() == "weyl train optim.lr=1"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["weyl_version"] and meta["git_commit"]
    # A relaunch with a different config keeps the previous one.
    prepare_run_dir(run, {"optim": {"lr": 2.0}}, ["weyl", "train", "optim.lr=2"])
    assert yaml.safe_load((run / "config.1.yaml").read_text()) == {"optim": {"lr": 1.0}}
    assert yaml.safe_load((run / "config.yaml").read_text()) == {"optim": {"lr": 2.0}}


def test_bad_arguments_are_one_line_errors_through_the_installed_script():
    from pathlib import Path

    script = str(Path(sys.executable).parent / "weyl")
    for args in (["report"], ["prepare", "nope"], ["demo", "--bogus"], ["modes", "--tokens", "x"]):
        out = subprocess.run([script, *args], capture_output=True, text=True, timeout=300)
        err = out.stderr.strip()
        assert out.returncode == 2, (args, out.stderr)
        assert "\n" not in err and err.startswith(f"weyl {args[0]}") and "--help" in err, err
