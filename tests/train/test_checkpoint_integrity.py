"""Damaged checkpoints: detected, skipped for the newest good one, never pruned into loss."""

import json
import logging
import os
import shutil

import pytest
import torch

from tests.train.cli_runs import TINY, reference_run, stderr_lines, weyl_train
from tests.train.fixtures import (
    assert_same_trajectory,
    step_records,
    synthetic_factories,
    tiny_config,
)
from weyl.cli import main as weyl_main
from weyl.train import run_training
from weyl.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    latest_checkpoint,
    rank_file_name,
    save_file_durably,
    step_dir_name,
)
from weyl.train.distributed import DistContext
from weyl.train.loggers import read_jsonl


def _manager(root, keep_last=0):
    mgr = CheckpointManager(root, DistContext(), keep_last=keep_last)
    for step in (3, 6):
        mgr.save(step, {"w": torch.full((256,), float(step))}, {"data": {"pos": step}})
    return mgr


def _truncate_half(path):
    os.truncate(path, path.stat().st_size // 2)


def _zero(path):
    os.truncate(path, 0)


def _random_same_size(path):
    path.write_bytes(os.urandom(path.stat().st_size))


DAMAGE = {
    "state.pt truncated to half": ("state.pt", _truncate_half, "bytes, expected"),
    "state.pt emptied": ("state.pt", _zero, "0 bytes, expected"),
    "rank file of random bytes": (rank_file_name(0), _random_same_size, "checksum"),
    "rank file deleted": (rank_file_name(0), os.remove, "missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_for_the_older_good_one(tmp_path, damage, caplog):
    name, spoil, reason_words = DAMAGE[damage]
    mgr = _manager(tmp_path)
    spoil(tmp_path / step_dir_name(6) / name)
    with caplog.at_level(logging.WARNING, logger="weyl.train.checkpoint"):
        path = mgr.load_newest_good()
    assert path.name == step_dir_name(3)
    shared, own = mgr.load(path)
    assert torch.equal(shared["w"], torch.full((256,), 3.0)) and own["data"] == {"pos": 3}
    [skipped] = mgr.skipped
    assert skipped.step == 6 and str(tmp_path / step_dir_name(6) / name) in skipped.reason
    assert reason_words in skipped.reason
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "\n" not in warnings[0] and name in warnings[0]


def test_a_checkpoint_the_weights_only_loader_rejects_is_skipped(tmp_path):
    mgr = _manager(tmp_path)
    # Sizes and CRC match (manifest rewritten) but the file is no torch zip: "any load" fails.
    ckpt = tmp_path / step_dir_name(6)
    (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    import zlib

    manifest["files"]["state.pt"] = {"size": 16, "crc32": zlib.crc32(b"not a checkpoint")}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    assert mgr.load_newest_good().name == step_dir_name(3)
    assert "cannot be loaded" in mgr.skipped[0].reason


def test_no_good_checkpoint_is_one_error_naming_each(tmp_path):
    mgr = _manager(tmp_path)
    for step in (3, 6):
        _zero(tmp_path / step_dir_name(step) / "state.pt")
    with pytest.raises(CheckpointError) as err:
        mgr.load_newest_good()
    text = str(err.value)
    assert "\n" not in text and step_dir_name(3) in text and step_dir_name(6) in text
    assert isinstance(err.value, ValueError)  # weyl train: one line, exit code 2
    # asked for by path, a damaged checkpoint is the same one-line error, no fallback
    with pytest.raises(CheckpointError, match=r"state\.pt has 0 bytes"):
        mgr.load(tmp_path / step_dir_name(6))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the garbage file below
def test_format_1_checkpoints_without_manifest_still_load(tmp_path):
    # What weyl wrote before manifests: state.pt (format 1) and the rank file, nothing else.
    for step in (3, 6):
        d = tmp_path / step_dir_name(step)
        d.mkdir()
        save_file_durably(
            {"w": torch.ones(2) * step, "format": 1, "step": step, "world_size": 1}, d / "state.pt"
        )
        save_file_durably({"data": {"pos": step}, "rank": 0}, d / rank_file_name(0))
    mgr = CheckpointManager(tmp_path, DistContext(), keep_last=0)
    assert latest_checkpoint(tmp_path).name == step_dir_name(6)
    assert mgr.load(mgr.load_newest_good())[0]["step"] == 6
    # what can be verified without a manifest: torch.load succeeds, the rank file exists
    (tmp_path / step_dir_name(6) / "state.pt").write_bytes(b"\x80garbage")
    assert mgr.load_newest_good().name == step_dir_name(3)
    os.remove(tmp_path / step_dir_name(3) / rank_file_name(0))
    with pytest.raises(CheckpointError, match=r"rank_00000\.pt is missing"):
        mgr.load_newest_good()


def test_pruning_never_deletes_the_last_good_checkpoint(tmp_path):
    mgr = _manager(tmp_path, keep_last=2)
    _truncate_half(tmp_path / step_dir_name(6) / "state.pt")  # damaged after it was written
    mgr.save(9, {"w": torch.full((256,), 9.0)}, {"data": {"pos": 9}})
    # keep_last=2 counts good ones (9 and 3); the damaged 6 is not worth the older good 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [step_dir_name(s) for s in (3, 6, 9)]
    mgr.save(12, {"w": torch.full((256,), 12.0)}, {"data": {"pos": 12}})
    assert sorted(p.name for p in tmp_path.iterdir()) == [step_dir_name(s) for s in (9, 12)]


def test_the_streamed_checksum_is_the_crc_of_the_file_on_disk(tmp_path):
    import zlib

    sd = {f"w{i}": torch.randn(64, 64) for i in range(4)}
    digest = save_file_durably(sd, tmp_path / "s.pt")
    data = (tmp_path / "s.pt").read_bytes()
    assert (digest.size, digest.crc32) == (len(data), zlib.crc32(data))


def test_resume_after_damage_replays_the_uninterrupted_run_bitwise(tmp_path):
    kw = dict(max_steps=12, ckpt_every=4, keep_last=4, eval_every=6)
    base = run_training(tiny_config(tmp_path / "base", **kw), factories=synthetic_factories())
    run = tmp_path / "run"
    cfg = tiny_config(run, **kw)
    shutil.copytree(tmp_path / "base", run)  # a finished run: checkpoints 4, 8, 12
    # step 12's rank file deleted, step 8's rank file overwritten: the good one is step 4
    os.remove(run / "checkpoints" / step_dir_name(12) / rank_file_name(0))
    _random_same_size(run / "checkpoints" / step_dir_name(8) / rank_file_name(0))
    resumed = run_training(cfg, factories=synthetic_factories())
    assert resumed["state"] == "finished" and resumed["final_loss"] == base["final_loss"]
    assert_same_trajectory(step_records(run), step_records(tmp_path / "base"))
    events = [
        r for r in read_jsonl(run / "metrics.jsonl") if r.get("event") == "checkpoint_skipped"
    ]
    assert [(e["step"], e["checkpoint_step"]) for e in events] == [(4, 12), (4, 8)]
    assert "missing" in events[0]["reason"] and "checksum" in events[1]["reason"]


def test_weyl_train_falls_back_to_the_older_checkpoint_and_fails_cleanly_when_none_is_good(
    tmp_path, monkeypatch, capsys, kjv_data
):
    data = kjv_data
    base = reference_run(tmp_path / "base", data, monkeypatch)
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "base", run)  # the finished run, checkpoints 4, 8, 12
    _truncate_half(run / "checkpoints" / step_dir_name(12) / "state.pt")
    # the rerun resumes from step 8 (today: a traceback, every time) and replays 9..12
    rerun = weyl_train(run, data)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    [line] = stderr_lines(rerun)
    assert "step_00000012/state.pt" in line and "truncated" in line, line
    assert_same_trajectory(step_records(run), step_records(tmp_path / "base"))
    assert json.loads((run / "status.json").read_text())["final_loss"] == base["final_loss"]
    # every checkpoint damaged: one line, exit 2, status failed; nothing deleted
    for ckpt in (run / "checkpoints").iterdir():
        _zero(ckpt / "state.pt")
    capsys.readouterr()
    assert weyl_main(["train", *TINY, f"run_dir={run}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weyl train: no intact checkpoint to resume")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "no intact checkpoint" in status["reason"]
    assert status["step"] == 12
    assert len(list((run / "checkpoints").iterdir())) == 3
