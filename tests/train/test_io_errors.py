"""A full disk or a read-only run dir: one line, exit 1, status failed, nothing lost."""

import errno
import json
import os
import shutil
import subprocess

import pytest
import yaml

from tests.train.cli_runs import (
    TINY,
    WEYL,
    cli_env,
    fill_up,
    reference_run,
    stderr_lines,
    tmpfs,
    weyl_train,
)
from tests.train.fixtures import assert_same_trajectory, step_records
from weyl.cli import main as weyl_main
from weyl.durable_files import replace_durably, temp_path, write_durably
from weyl.train.loggers import JsonlLogger
from weyl.train.run_status import read_status, write_status

# A checkpoint of TINY is ~142 tmpfs pages (DCP shard 529 KB, .metadata 23 KB, rank file 16 KB,
# state.pt, manifest); with this much room the checkpoints of steps 4 and 8 fit and the one of
# step 12 does not.
ROOM_FOR_TWO_AND_A_HALF_CHECKPOINTS_KIB = 1400


def test_status_and_replacements_on_a_full_disk(tmp_path):
    with tmpfs(tmp_path / "disk", size="1m") as disk:
        write_status(disk, "running", 3)
        (disk / "keep.txt").write_text("precious")
        fill_up(disk, leave_kib=0)
        # measured: no new file can get a block, but status.json's own block can be rewritten
        write_status(disk, "failed", 3, "no space left on device " + "x" * 3000)
        status = read_status(disk)
        assert status["state"] == "failed" and status["reason"].endswith("...")
        with pytest.raises(OSError) as err:
            replace_durably(
                disk / "keep.txt", disk / ".tmp-keep.txt", lambda f: f.write(b"y" * 9000)
            )
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(disk / "keep.txt")
        assert (disk / "keep.txt").read_text() == "precious"
        assert not list(disk.glob(".tmp-*"))
        # a metrics line that needs a new block: the error names metrics.jsonl
        logger = JsonlLogger(disk / "metrics.jsonl")
        with pytest.raises(OSError) as err:
            logger.log({"step": 1, "note": "z" * 5000})
        assert err.value.errno == errno.ENOSPC
        assert err.value.filename == str(disk / "metrics.jsonl")
        logger.close()  # the line that did not fit is not raised a second time


def test_a_full_disk_during_a_checkpoint_is_one_line_and_loses_nothing(
    tmp_path, monkeypatch, capsys, kjv_data
):
    reference_run(tmp_path / "base", kjv_data, monkeypatch)
    with tmpfs(tmp_path / "disk", size="3m") as disk:
        run = disk / "run"
        filler = fill_up(disk, leave_kib=ROOM_FOR_TWO_AND_A_HALF_CHECKPOINTS_KIB)
        proc = weyl_train(run, kjv_data)
        assert proc.returncode == 1, proc.stderr[-3000:]
        [line] = stderr_lines(proc)
        ckpts = run / "checkpoints"
        assert line == (
            # the shards fail first; DCP's write names no file, so the checkpoint dir is named
            f"weyl train: no space left on device writing {ckpts}/.tmp-step_00000012; "
            f"last good checkpoint: step 8 ({ckpts}/step_00000008)"
        )
        status = read_status(run)
        assert status["state"] == "failed" and status["reason"] == line[len("weyl train: ") :]
        assert status["step"] == 12
        assert not [p for p in run.rglob("*") if p.name.startswith(".tmp-")]
        config = (run / "config.yaml").read_text()
        assert yaml.safe_load(config)["run_dir"] == str(run)

        # A rerun while the disk is (now entirely) full fails at its start and keeps config.yaml.
        more = fill_up(disk, leave_kib=0, name="filler2")
        capsys.readouterr()
        assert weyl_main(["train", *TINY, f"run_dir={run}"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no space left on device writing" in err[0], err
        assert "last good checkpoint: step 8" in err[0] and "config.yaml" in err[0]
        assert (run / "config.yaml").read_text() == config
        assert read_status(run)["previous_state"] == "failed"
        assert not [p for p in run.rglob("*") if p.name.startswith(".tmp-")]

        # Room again: the run resumes from step 8 and ends as if nothing had happened.
        filler.unlink()
        more.unlink()
        assert weyl_main(["train", *TINY, f"run_dir={run}"]) == 0
        assert read_status(run)["state"] == "finished"
        assert_same_trajectory(step_records(run), step_records(tmp_path / "base"))


def test_a_read_only_run_dir_is_one_line(tmp_path, monkeypatch, capsys, kjv_data):
    monkeypatch.setenv("WEYL_DATA_DIR", str(kjv_data))
    with tmpfs(tmp_path / "ro", size="1m", read_only=True) as ro:
        capsys.readouterr()
        assert weyl_main(["train", *TINY, f"run_dir={ro}"]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [
            f"weyl train: run_dir {ro} is not writable (read-only file system); "
            "choose another run_dir=..."
        ]
        assert not list(ro.iterdir())


def test_status_json_of_a_failed_start_keeps_the_previous_state(tmp_path):
    """The record a failing start writes says what the run dir said before it."""
    from weyl.train.launch import _record_failure

    write_status(tmp_path, "finished", 12, final_loss=1.5)
    (tmp_path / "checkpoints" / ".tmp-step_00000016").mkdir(parents=True)
    assert _record_failure(tmp_path, "no space left on device writing x", started=False) == 12
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["previous_state"]) == ("failed", "finished")
    assert not list((tmp_path / "checkpoints").iterdir())


def test_write_durably_replaces_text_and_bytes_through_one_temp_name(tmp_path):
    target = tmp_path / "status.json"
    write_durably(target, "old ✓\n")
    assert target.read_bytes() == "old ✓\n".encode()
    write_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert temp_path(target) == tmp_path / ".tmp-status.json"  # what the launcher cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def _as_root_without_permission_override() -> list[str]:
    """A command prefix under which root meets EACCES like any user: setpriv drops the
    capabilities that let root write where the mode bits say no."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("run_dir_exists", [True, False], ids=["run-dir", "its-parent"])
def test_permission_denied_on_the_run_dir_or_its_parent_is_one_line(
    tmp_path, kjv_data, run_dir_exists
):
    prefix = _as_root_without_permission_override()
    locked = tmp_path / "locked"
    run = locked / "run"
    (run if run_dir_exists else locked).mkdir(parents=True)
    (run if run_dir_exists else locked).chmod(0o555)
    try:
        proc = subprocess.run(
            [*prefix, str(WEYL), "train", *TINY, f"run_dir={run}"],
            env=cli_env(kjv_data),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        (run if run_dir_exists else locked).chmod(0o755)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert stderr_lines(proc) == [
        f"weyl train: run_dir {run} is not writable (permission denied); choose another run_dir=..."
    ]
    assert not list(locked.rglob("*.yaml")) and not list(locked.rglob("status.json"))
