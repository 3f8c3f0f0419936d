"""`weyl prepare` subcommands: create KJV bins, check ImageFolder / digits, help and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weyl.commands.prepare import main


@pytest.mark.parametrize("sub", ["openwebtext", "kjv", "imagenet", "digits", "fashion_mnist"])
def test_help(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([sub, "--help"])
    assert exit_info.value.code == 0
    assert f"weyl prepare {sub}" in capsys.readouterr().out


def test_kjv_bytes_writes_bins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kjv"
    assert main(["kjv", "--tokenizer", "bytes", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"] == "bytes"
    assert (out / "train.bin").stat().st_size == 2 * meta["splits"]["train"]["tokens"]
    assert json.loads(capsys.readouterr().out)["vocab_size"] == 256


def test_openwebtext_local_jsonl(tmp_path: Path) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(40)))
    out = tmp_path / "owt"
    assert (
        main(
            [
                "openwebtext",
                "--source",
                str(src),
                "--out",
                str(out),
                "--num-proc",
                "1",
                "--cache-dir",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    assert json.loads((out / "meta.json").read_text())["splits"]["val"]["documents"] == 1


def test_imagenet_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["imagenet", "--path", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "absent") in err and "weyl prepare imagenet" in err
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / split / c / "0.png")
    assert main(["imagenet", "--path", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "root": str(tmp_path),
        "num_classes": 2,
        "train": 2,
        "val": 2,
    }
    (tmp_path / "val" / "c").mkdir()
    assert main(["imagenet", "--path", str(tmp_path)]) == 1
    assert "class folders differ" in capsys.readouterr().err


def test_digits_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["digits"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dataset": "digits",
        "train": 1437,
        "val": 360,
        "num_classes": 10,
    }
