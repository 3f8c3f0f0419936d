"""ImageNet pipeline on a synthetic ImageFolder: Table 2 transforms, mixup, sharded resumable sampling."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.image_folder import write_image_folder
from weyl.data import build_data
from weyl.data.data_config import ImageDataConfig
from weyl.data.epoch_sampler import ShardedEpochSampler
from weyl.data.image_transforms import build_mix

CLASSES = ("cat", "dog", "eel")
N_TRAIN, N_VAL = 6, 3


def _write_folder(root: Path) -> Path:
    return write_image_folder(root, CLASSES, {"train": N_TRAIN, "val": N_VAL})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("imagenet"))


def _cfg(root: Path, **kw) -> ImageDataConfig:
    base = {"name": "imagenet", "path": str(root), "img_size": 32, "random_erasing": 0.25}
    return ImageDataConfig(**{**base, **kw})


def test_shapes_labels_and_soft_targets(folder: Path) -> None:
    bundle = build_data(_cfg(folder), batch_size=4, seed=0)
    assert bundle.task == "classification" and bundle.num_classes == 3 and bundle.vocab_size is None
    assert bundle.samples_per_epoch == 3 * N_TRAIN
    x, y = next(bundle.train)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and ((y >= 0) & (y < 3)).all()
    mixed_x, soft = bundle.mix(x, y)
    assert mixed_x.shape == x.shape and soft.shape == (4, 3)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(4))
    # label smoothing 0.1 over 3 classes: no target drops below 0.1/3
    assert soft.min() >= 0.1 / 3 - 1e-6
    px, py = bundle.probe
    assert px.shape == (4, 3, 32, 32) and py.shape == (4,)


def test_eval_transform_matches_torchvision_reference(folder: Path) -> None:
    from torchvision import transforms as T

    bundle = build_data(_cfg(folder, crop_pct=0.875), batch_size=4)
    ref = T.Compose(
        [
            T.Resize(int(32 / 0.875), interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(32),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    first = Image.open(folder / "val" / "cat" / "0.png").convert("RGB")
    px, py = bundle.probe
    torch.testing.assert_close(px[0], ref(first), atol=1e-5, rtol=0)
    assert int(py[0]) == 0
    passes = [torch.cat([x for x, _ in bundle.make_val()]) for _ in range(2)]
    assert passes[0].shape[0] == 3 * N_VAL and torch.equal(passes[0], passes[1])


def test_resume_is_exact_across_two_ranks(folder: Path) -> None:
    cfg = _cfg(folder)
    for rank in (0, 1):
        a = build_data(cfg, batch_size=2, rank=rank, world_size=2, seed=5)
        for _ in range(5):  # crosses the epoch boundary (9 samples per rank per epoch)
            x, y = next(a.train)
            a.mix(x, y)
        buf = io.BytesIO()
        torch.save(a.train.state_dict(), buf)
        expected = []
        for _ in range(4):
            x, y = next(a.train)
            expected.append((x, y, *a.mix(x, y)))
        b = build_data(cfg, batch_size=2, rank=rank, world_size=2, seed=5)
        buf.seek(0)
        b.train.load_state_dict(torch.load(buf, weights_only=True))
        for ex, ey, emx, esoft in expected:
            x, y = next(b.train)
            mx, soft = b.mix(x, y)
            assert torch.equal(x, ex) and torch.equal(y, ey)
            assert torch.equal(mx, emx) and torch.equal(soft, esoft)


def test_prefetching_workers_do_not_move_the_checkpoint(folder: Path) -> None:
    cfg0, cfg2 = (
        _cfg(folder, mixup=0.0, cutmix=0.0),
        _cfg(folder, mixup=0.0, cutmix=0.0, num_workers=2),
    )
    a, b = build_data(cfg0, batch_size=2, seed=1), build_data(cfg2, batch_size=2, seed=1)
    assert a.mix is None and a.label_smoothing == pytest.approx(0.1)
    for _ in range(3):
        xa, ya = next(a.train)
        xb, yb = next(b.train)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert b.train.state_dict()["sampler"] == a.train.state_dict()["sampler"]
    assert b.train.state_dict()["sampler"]["index"] == 6


def test_ranks_see_disjoint_indices_within_an_epoch() -> None:
    size, world = 23, 3
    for epoch in range(3):
        shards = [
            ShardedEpochSampler(size, rank=r, world_size=world, seed=9).epoch_indices(epoch)
            for r in range(world)
        ]
        flat = torch.cat(shards).tolist()
        assert len(flat) == len(set(flat)) == size - size % world
        assert all(len(s) == size // world for s in shards)
    s0 = ShardedEpochSampler(size, rank=0, world_size=world, seed=9)
    assert not torch.equal(s0.epoch_indices(0), s0.epoch_indices(1))  # reshuffled each epoch
    pairs = s0.take(len(s0) + 2)
    assert [e for e, _ in pairs] == [0] * len(s0) + [1, 1]
    assert s0.state_dict()["epoch"] == 1 and s0.state_dict()["index"] == 2


def test_val_shards_are_disjoint_with_equal_batches(folder: Path) -> None:
    seen, counts = [], []
    for rank in range(2):
        bundle = build_data(_cfg(folder), batch_size=2, rank=rank, world_size=2)
        batches = list(bundle.make_val())
        counts.append(len(batches))
        seen += [tuple(x.flatten().tolist()) for xb, _ in batches for x in xb]
    assert counts[0] == counts[1] and len(seen) == len(set(seen)) == 3 * N_VAL - 1


def test_local_hf_dataset(tmp_path: Path) -> None:
    import datasets

    rng = np.random.default_rng(1)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))}
    )

    def split(n: int) -> datasets.Dataset:
        images = [
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(n)
        ]
        return datasets.Dataset.from_dict(
            {"image": images, "label": [i % 3 for i in range(n)]}, features=features
        )

    datasets.DatasetDict({"train": split(6), "validation": split(3)}).save_to_disk(
        str(tmp_path / "hf")
    )
    bundle = build_data(_cfg(tmp_path / "hf"), batch_size=2)
    x, _ = next(bundle.train)
    assert x.shape == (2, 3, 32, 32) and bundle.num_classes == 3 and bundle.samples_per_epoch == 6


def test_missing_imagenet_names_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere.*weyl prepare imagenet"):
        build_data(_cfg(tmp_path / "nowhere"), batch_size=2)
    with pytest.raises(ValueError, match="even per-rank batch"):
        build_mix(ImageDataConfig(), 10, batch_size=3)
    with pytest.raises(ValueError, match=r"data\.kind"):
        build_data(ImageDataConfig(kind="video"), batch_size=2)
