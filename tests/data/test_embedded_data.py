"""Embedded data sets load offline: KJV (char / bytes / gpt2), sklearn digits, Fashion-MNIST."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from weyl.data import build_data
from weyl.data.data_config import ImageDataConfig, TextDataConfig
from weyl.data.image_sets import FASHION_MNIST_DIR
from weyl.data.kjv import kjv_jsonl_path
from weyl.data.tokenizer import gpt2_encoding


@pytest.fixture(scope="module")
def verses() -> list[dict]:
    with open(kjv_jsonl_path()) as f:
        return [json.loads(line) for line in f]


def test_kjv_source_is_the_full_bible(verses: list[dict]) -> None:
    assert len(verses) == 31103
    assert verses[0]["text"] == "In the beginning God created the heaven and the earth."


def test_kjv_char(kjv_dirs, verses) -> None:
    bundle = build_data(
        TextDataConfig(tokenizer="char", path=str(kjv_dirs["char"]), block_size=32), batch_size=4
    )
    chars = sorted(set("\n".join(v["text"] for v in verses)))
    assert bundle.task == "lm" and bundle.vocab_size == len(chars) and bundle.mix is None
    meta = json.loads((kjv_dirs["char"] / "meta.json").read_text())
    assert meta["chars"] == chars
    train = np.fromfile(kjv_dirs["char"] / "train.bin", dtype=np.uint16)
    first = verses[0]["text"] + "\n"
    assert "".join(chars[i] for i in train[: len(first)]) == first
    # every character of the corpus is a token: train + val = all verse characters + newlines
    total = sum(len(v["text"]) + 1 for v in verses)
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == total
    assert bundle.samples_per_epoch == meta["splits"]["train"]["tokens"] // 32
    x, y = next(bundle.train)
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < len(chars)


def test_kjv_bytes_and_val_chapters(kjv_dirs, verses) -> None:
    bundle = build_data(
        TextDataConfig(tokenizer="bytes", path=str(kjv_dirs["bytes"]), block_size=16), batch_size=2
    )
    assert bundle.vocab_size == 256
    val = np.fromfile(kjv_dirs["bytes"] / "val.bin", dtype=np.uint16)
    # Genesis 10 is the 10th chapter, the first one held out
    gen10 = [v["text"] for v in verses if v["book"] == "Genesis" and v["chapter"] == 10]
    expected = ("\n".join(gen10) + "\n").encode()
    assert bytes(val[: len(expected)].astype(np.uint8)) == expected
    assert bundle.probe[0].shape == (4, 16)


def test_kjv_gpt2(kjv_dirs, verses) -> None:
    bundle = build_data(
        TextDataConfig(tokenizer="gpt2", path=str(kjv_dirs["gpt2"]), block_size=16), batch_size=2
    )
    assert bundle.vocab_size == 50257
    train = np.fromfile(kjv_dirs["gpt2"] / "train.bin", dtype=np.uint16)
    head = gpt2_encoding().encode_ordinary(verses[0]["text"] + "\n" + verses[1]["text"])
    assert train[: len(head) - 1].tolist() == head[:-1]
    assert next(bundle.train)[0].max() < 50257


def test_kjv_prepared_on_first_use_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEYL_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    bundle = build_data(TextDataConfig(tokenizer="bytes"), batch_size=2)
    elapsed = time.perf_counter() - start
    assert (tmp_path / "data_cache" / "kjv_bytes" / "meta.json").is_file()
    assert bundle.vocab_size == 256
    assert elapsed < 30, f"first-use preparation took {elapsed:.1f}s"
    # WEYL_DATA_DIR redirects the cache
    monkeypatch.setenv("WEYL_DATA_DIR", str(tmp_path / "elsewhere"))
    build_data(TextDataConfig(tokenizer="bytes"), batch_size=2)
    assert (tmp_path / "elsewhere" / "kjv_bytes" / "train.bin").is_file()


def test_text_errors_name_the_fix(tmp_path: Path, kjv_dirs) -> None:
    with pytest.raises(FileNotFoundError, match=r"owt_missing.*weyl prepare openwebtext"):
        build_data(
            TextDataConfig(
                name="openwebtext", tokenizer="gpt2", path=str(tmp_path / "owt_missing")
            ),
            batch_size=2,
        )
    with pytest.raises(ValueError, match=r"data\.tokenizer"):
        build_data(
            TextDataConfig(name="shakespeare", tokenizer="char", path=str(kjv_dirs["bytes"])),
            batch_size=2,
        )
    with pytest.raises(ValueError, match=r"data\.kind"):
        build_data(TextDataConfig(kind="audio"), batch_size=2)


def test_digits(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    cfg = ImageDataConfig(name="digits", img_size=16, randaugment="", mixup=0.0, cutmix=0.0)
    bundle = build_data(cfg, batch_size=8, seed=0)
    assert bundle.num_classes == 10 and bundle.samples_per_epoch == 1437 and bundle.mix is None
    x, y = next(bundle.train)
    assert x.shape == (8, 3, 16, 16) and y.dtype == torch.int64 and ((y >= 0) & (y < 10)).all()
    val = list(bundle.make_val())
    assert sum(len(b[1]) for b in val) == 360
    # train + val are exactly sklearn's 1797 images: same label histogram, disjoint pixels
    train_base = bundle.train.dataset.base
    val_labels = torch.cat([b[1] for b in val])
    counts = torch.bincount(torch.cat([train_base.labels, val_labels]), minlength=10)
    digits = load_digits()
    assert counts.tolist() == np.bincount(digits.target, minlength=10).tolist()
    # the probe is the eval transform of val image 0: bicubic resize + train-split normalisation
    val_base = bundle.make_val.args[0].base
    train_px = train_base.images.numpy() / 16.0
    mean, std = train_px.mean(), train_px.std()
    raw = val_base.images[0:1].double() / 16.0
    ref = torch.nn.functional.interpolate(
        raw, size=(16, 16), mode="bicubic", align_corners=False
    ).clamp(0, 1)
    ref = ((ref[0] - mean) / std).float().expand(3, -1, -1)
    torch.testing.assert_close(bundle.probe[0][0], ref, atol=1e-5, rtol=1e-5)
    assert any(np.array_equal(val_base.images[0, 0].numpy(), img) for img in digits.images)


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_fashion_mnist() -> None:
    bundle = build_data(
        ImageDataConfig(name="fashion_mnist", img_size=28, randaugment=""), batch_size=4
    )
    assert bundle.samples_per_epoch == 60000 and bundle.num_classes == 10
    assert next(bundle.train)[0].shape == (4, 3, 28, 28)


def test_fashion_mnist_missing_names_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"fm_missing.*weyl prepare fashion_mnist"):
        build_data(
            ImageDataConfig(name="fashion_mnist", path=str(tmp_path / "fm_missing")), batch_size=2
        )


def test_fashion_mnist_reader_on_synthetic_idx(tmp_path: Path) -> None:
    import gzip
    import struct

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 10), ("t10k", 4)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBB3I", 0, 8, 3, n, 28, 28) + imgs.tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(
                struct.pack(">HBBI", 0, 8, 1, n) + (np.arange(n) % 10).astype(np.uint8).tobytes()
            )
        if prefix == "train":
            first = imgs[0]
    bundle = build_data(
        ImageDataConfig(
            name="fashion_mnist", path=str(tmp_path), img_size=28, mixup=0.0, cutmix=0.0
        ),
        batch_size=2,
    )
    assert bundle.samples_per_epoch == 10
    img0, label0 = bundle.train.dataset.base[0]
    torch.testing.assert_close(img0[0], torch.from_numpy(first / 255.0).float())
    assert label0 == 0 and os.path.getsize(tmp_path / "t10k-labels-idx1-ubyte.gz") > 0


def test_tensor_transform_erasing_shift_and_determinism() -> None:
    from weyl.data.image_transforms import TensorImageTransform

    tf = TensorImageTransform(16, (0.5,), (0.25,), train=True, random_erasing=1.0)
    img = torch.full((1, 16, 16), 0.5)  # normalises to exactly 0
    for seed in range(20):
        out = tf(img, generator=torch.Generator().manual_seed(seed))
        again = tf(img, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out, again) and out.shape == (3, 16, 16)
        # the shift pads with 0 (-> -2 after normalisation); erased pixels are N(0, 1) noise
        changed = (out[0] != 0) & (out[0] != -2.0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert int(changed.sum()) == int(box)  # one axis-aligned rectangle
        assert 0.02 * 256 * 0.5 <= int(box) <= 256 / 3 + 16
    eval_tf = TensorImageTransform(16, (0.5,), (0.25,), train=False, random_erasing=1.0)
    assert torch.equal(eval_tf(img), torch.zeros(3, 16, 16))


def test_digits_resume_is_exact() -> None:
    cfg = ImageDataConfig(name="digits", img_size=8, randaugment="", random_erasing=0.25)
    a = build_data(cfg, batch_size=4, seed=2)
    for _ in range(3):
        a.mix(*next(a.train))
    state = a.train.state_dict()
    expected = [a.mix(*next(a.train)) for _ in range(3)]
    b = build_data(cfg, batch_size=4, seed=2)
    b.train.load_state_dict(state)
    for ex, ey in expected:
        x, y = b.mix(*next(b.train))
        assert torch.equal(x, ex) and torch.equal(y, ey)
