"""Format-3 checkpoints in one process: DCP shards + manifest, weights-only reading, format 2
still loading, the async option's files, and `weyl export`."""

import json
import os
import pickle
import zlib

import pytest
import torch

from tests.train.fixtures import (
    assert_same_trajectory,
    step_records,
    synthetic_factories,
    tiny_config,
)
from weyl.cli import main as weyl_main
from weyl.train import fault_injection, run_training
from weyl.train.checkpoint import latest_checkpoint, load_file, model_optimizer_state
from weyl.train.sharded_state import (
    UnsafeCheckpointError,
    model_weights,
    read_sharded_state,
    safe_reader,
)
from weyl.train.trainer import Trainer

KW = dict(max_steps=8, ckpt_every=4, keep_last=4, eval_every=4)


@pytest.fixture(scope="module")
def sync_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("sync") / "run"
    summary = run_training(tiny_config(run, **KW), factories=synthetic_factories())
    assert summary["state"] == "finished"
    return run


def test_layout_and_manifest_crcs_match_the_files(sync_run):
    ckpt = latest_checkpoint(sync_run / "checkpoints")
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == [
        ".metadata",
        "__0_0.distcp",
        "manifest.json",
        "rank_00000.pt",
        "state.pt",
    ]
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["format"] == 3 and manifest["step"] == 8 and manifest["world_size"] == 1
    assert sorted(manifest["files"]) == sorted(n for n in names if n != "manifest.json")
    for name, entry in manifest["files"].items():
        data = (ckpt / name).read_bytes()
        assert (entry["size"], entry["crc32"]) == (len(data), zlib.crc32(data)), name
    # state.pt holds no weights any more: they are in the shards
    assert "model" not in load_file(ckpt / "state.pt")


def test_weights_read_back_as_torch_own_conversion_does(sync_run, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    ckpt = latest_checkpoint(sync_run / "checkpoints")
    dcp_to_torch_save(ckpt, tmp_path / "ref.pt")  # torch's converter: the reference
    ref = torch.load(tmp_path / "ref.pt", weights_only=False)
    ours = model_weights(ckpt)
    assert set(ours) == set(ref["model"]) and len(ours) > 5
    for name, tensor in ref["model"].items():
        assert torch.equal(ours[name], tensor), name
    whole = read_sharded_state(ckpt)
    state = ref["optim"]["state"]
    assert set(whole["optim"]["state"]) == set(state)
    for fqn, entry in state.items():
        # AdamW²'s per-matrix vectors travel with the moments
        for key, value in entry.items():
            assert torch.equal(whole["optim"]["state"][fqn][key], value), (fqn, key)
    assert any("sigma_vec_weight" in e for e in state.values())


def test_export_command_writes_a_plain_weights_file(sync_run, tmp_path, capsys):
    ckpt = latest_checkpoint(sync_run / "checkpoints")
    out = tmp_path / "weights.pt"
    assert weyl_main(["export", str(ckpt), str(out)]) == 0
    weights = torch.load(out, weights_only=True)
    from weyl.models import build_model

    model = build_model(tiny_config(tmp_path).model)
    model.load_state_dict(weights)  # strict: every key, every shape
    assert torch.equal(weights["lm_head.weight"], model_weights(ckpt)["lm_head.weight"])
    capsys.readouterr()
    assert weyl_main(["export", str(tmp_path), str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weyl export: ") and "\n" not in err and "step_XXXXXXXX" in err


class _Planted:
    def __reduce__(self):
        return (os.mkdir, (os.environ["WEYL_TEST_PLANTED"],))


def test_metadata_that_would_run_code_is_refused(sync_run, tmp_path, monkeypatch):
    ckpt = tmp_path / "evil"
    ckpt.mkdir()
    planted = tmp_path / "planted"
    monkeypatch.setenv("WEYL_TEST_PLANTED", str(planted))
    (ckpt / ".metadata").write_bytes(pickle.dumps(_Planted()))
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.mkdir|os\.mkdir"):
        safe_reader(ckpt).read_metadata()
    with pytest.raises(UnsafeCheckpointError):
        model_weights(ckpt)
    assert not planted.exists()
    # a real checkpoint's metadata passes the same reader
    md = safe_reader(latest_checkpoint(sync_run / "checkpoints")).read_metadata()
    assert "model.wte.weight" in md.state_dict_metadata


def test_async_save_writes_the_same_files_and_trajectory(sync_run, tmp_path):
    run = tmp_path / "async"
    summary = run_training(
        tiny_config(run, checkpoint_async=True, **KW), factories=synthetic_factories()
    )
    assert summary["state"] == "finished"
    assert_same_trajectory(step_records(run), step_records(sync_run))
    for step in (4, 8):
        a = run / "checkpoints" / f"step_{step:08d}"
        s = sync_run / "checkpoints" / f"step_{step:08d}"
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in s.iterdir())
        assert (a / "__0_0.distcp").read_bytes() == (s / "__0_0.distcp").read_bytes()
        ra, rs = load_file(a / "rank_00000.pt"), load_file(s / "rank_00000.pt")
        assert ra["data"] == rs["data"] and torch.equal(ra["rng"]["torch"], rs["rng"]["torch"])
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def test_a_format_2_checkpoint_resumes_bitwise(sync_run, tmp_path, monkeypatch):
    # What weyl wrote before format 3: full model/optimizer state dicts inside state.pt.
    def format_2_state(self):
        shared, own, _ = original(self)
        model_sd, optim_sd = model_optimizer_state(self.p.model, self.p.optimizer)
        return {**shared, "model": model_sd, "optimizer": optim_sd}, own, None

    original = Trainer.state_for_checkpoint
    run = tmp_path / "old"
    cfg = tiny_config(run, **KW)
    monkeypatch.setattr(Trainer, "state_for_checkpoint", format_2_state)
    fault_injection.install_from_env({"WEYL_TEST_RAISE_AT_STEP": "4"})
    try:
        with pytest.raises(RuntimeError, match="injected fault after step 4"):
            run_training(cfg, factories=synthetic_factories())
    finally:
        fault_injection.reset()
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt.name == "step_00000004" and not (ckpt / ".metadata").exists()
    assert "model" in load_file(ckpt / "state.pt")
    monkeypatch.setattr(Trainer, "state_for_checkpoint", original)
    summary = run_training(cfg, factories=synthetic_factories())
    assert summary["state"] == "finished"
    assert_same_trajectory(step_records(run), step_records(sync_run))
    assert (latest_checkpoint(run / "checkpoints") / ".metadata").is_file()
