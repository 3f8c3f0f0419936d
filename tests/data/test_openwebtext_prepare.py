"""nanoGPT-style preparation of a local corpus, end to end, checked against direct references."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from weyl.data.openwebtext import prepare_openwebtext
from weyl.data.token_bins import read_meta
from weyl.data.tokenizer import gpt2_encoding

EOT = 50256
WORDS = ["the", "of", "light", "waters", "naïve", "café", "42", "spirit,", "moved.", "deep—void!"]


def _docs(n: int = 300) -> list[str]:
    rng = random.Random(0)
    docs = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25)))
        docs.append(f"Doc {i}: {body}" + ("\n\nsecond paragraph" if i % 7 == 0 else ""))
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    docs = _docs()
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path, docs


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("owt_a")
    prepare_openwebtext(out, str(corpus[0]), cache_dir=out / "hf", progress=False)
    return out


def _segments(tokens: np.ndarray) -> list[str]:
    enc = gpt2_encoding()
    ends = np.flatnonzero(tokens == EOT)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [enc.decode(tokens[s:e].tolist()) for s, e in zip(starts, ends)]


def test_token_counts_eot_and_dtype(prepared: Path, corpus) -> None:
    _, docs = corpus
    enc = gpt2_encoding()
    expected = sum(len(enc.encode_ordinary(d)) + 1 for d in docs)
    meta = read_meta(prepared)
    train = np.memmap(prepared / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(prepared / "val.bin", dtype=np.uint16, mode="r")
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == expected
    assert (
        len(train) == meta["splits"]["train"]["tokens"]
        and len(val) == meta["splits"]["val"]["tokens"]
    )
    assert os.path.getsize(prepared / "train.bin") == 2 * len(train)
    # one EOT closes every document, and each segment between EOTs is one whole source document
    assert train[-1] == EOT and val[-1] == EOT
    segments = _segments(np.asarray(train)) + _segments(np.asarray(val))
    assert sorted(segments) == sorted(docs)
    assert meta["tokenizer"] == "gpt2" and meta["eot_token"] == EOT
    assert not (prepared / ".tokenize_cache").exists()


def test_val_split_is_nanogpts_and_deterministic(prepared: Path, corpus, tmp_path: Path) -> None:
    import datasets

    path, docs = corpus
    # nanoGPT's own recipe, applied directly with HF datasets, is the reference
    ref = datasets.Dataset.from_dict({"text": docs}).train_test_split(
        test_size=0.0005, seed=2357, shuffle=True
    )
    val_ref = list(ref["test"]["text"])
    assert len(val_ref) == 1
    val = np.fromfile(prepared / "val.bin", dtype=np.uint16)
    assert _segments(val) == val_ref
    # a second, independent run (own cache, 2 processes) writes byte-identical files
    out_b = tmp_path / "owt_b"
    prepare_openwebtext(out_b, str(path), cache_dir=tmp_path / "hf", num_proc=2, progress=False)
    for name in ("train.bin", "val.bin"):
        assert (out_b / name).read_bytes() == (prepared / name).read_bytes()


def test_restart_after_interruption_and_skip_when_complete(corpus, tmp_path: Path) -> None:
    path, _ = corpus
    out = tmp_path / "owt"
    out.mkdir()
    # leftovers of a killed run: a half-written temp file of a dead writer and a truncated bin
    (out / ".train.bin.999999999.deadbeef.tmp").write_bytes(b"\0" * 10)
    (out / "train.bin").write_bytes(b"\1\0" * 5)
    meta = prepare_openwebtext(out, str(path), cache_dir=tmp_path / "hf", progress=False)
    assert not list(out.glob(".*.tmp"))
    assert os.path.getsize(out / "train.bin") == 2 * meta["splits"]["train"]["tokens"]
    stamp = os.stat(out / "train.bin").st_mtime_ns
    prepare_openwebtext(out, str(path), cache_dir=tmp_path / "hf", progress=False)
    assert os.stat(out / "train.bin").st_mtime_ns == stamp  # complete set left alone
    (out / "val.bin").write_bytes(b"\0\0")  # corrupt: size no longer matches meta.json
    with pytest.raises(ValueError, match="incomplete or corrupt"):
        read_meta(out)
    prepare_openwebtext(out, str(path), cache_dir=tmp_path / "hf", progress=False)
    read_meta(out)


def test_text_files_one_document_per_file(tmp_path: Path) -> None:
    src = tmp_path / "txt"
    src.mkdir()
    docs = _docs(12)
    for i, d in enumerate(docs):
        (src / f"{i:03d}.txt").write_text(d)
    meta = prepare_openwebtext(
        tmp_path / "out", str(src), cache_dir=tmp_path / "hf", progress=False
    )
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == len(docs)
    tokens = np.concatenate(
        [np.fromfile(tmp_path / "out" / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")]
    )
    assert sorted(_segments(tokens)) == sorted(docs)


def test_missing_hub_source_fails_fast_offline(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="local"):
        prepare_openwebtext(
            tmp_path / "out", "surely-not-a-local-path/owt", cache_dir=tmp_path / "hf"
        )
