"""Image classification sources: ImageFolder / local HF ImageNet, sklearn digits, Fashion-MNIST.

Every source is a pair of map-style sets returning ``(image, label)``: PIL images for
ImageNet-like folders (timm's PIL transforms apply), uint8/float ``(C, H, W)`` tensors for the
small embedded sets (a tensor pipeline applies, see :mod:`weyl.data.image_transforms`).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from weyl.data.locations import data_root, missing_data_error

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DIGITS_VAL_SIZE = 360
DIGITS_SPLIT_SEED = 0
VAL_DIR_NAMES = ("val", "validation")


@dataclass
class ImageSplits:
    """Train and val sets of one source, with what the pipeline needs to know about them."""

    train: Any
    val: Any
    num_classes: int
    # "pil": timm PIL transforms; "tensor": the tensor pipeline for small embedded sets.
    modality: str
    # Per-channel mean/std of the train images in [0, 1] (tensor sets only).
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # Whether a horizontal flip preserves the label (not for digits).
    hflip: bool = True


class TensorImageSet(torch.utils.data.Dataset):
    """``(images[i] · scale, labels[i])``: stored ``(N, C, H, W)`` (uint8 keeps memory low), served as float in [0, 1]."""

    def __init__(self, images: Tensor, labels: Tensor, scale: float = 1.0) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"expected images (N, C, H, W) and N labels, got {tuple(images.shape)}, {len(labels)}"
            )
        self.images, self.labels, self.scale = images, labels.long(), scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].float() * self.scale, int(self.labels[i])


class HFImageSet(torch.utils.data.Dataset):
    """A Hugging Face image data set (``image`` and ``label`` columns) as ``(PIL RGB, int)``."""

    def __init__(self, ds: Any) -> None:
        missing = {"image", "label"} - set(ds.column_names)
        if missing:
            raise ValueError(
                f"HF image data set needs 'image' and 'label' columns, missing {sorted(missing)}"
            )
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        row = self.ds[int(i)]
        return row["image"].convert("RGB"), int(row["label"])


def _val_dir(root: Path) -> Path | None:
    return next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)


def check_image_folder(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate an ImageFolder layout (``train/<class>/*``, ``val/<class>/*``); returns counts."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = Path(root)
    val_dir = _val_dir(root)
    if not (root / "train").is_dir() or val_dir is None:
        raise missing_data_error(
            "ImageFolder (train/ and val/ subfolders)", root, f"weyl prepare imagenet --path {root}"
        )
    counts: dict[str, Any] = {}
    classes: dict[str, list[str]] = {}
    for split, d in (("train", root / "train"), ("val", val_dir)):
        classes[split] = sorted(p.name for p in d.iterdir() if p.is_dir())
        if not classes[split]:
            raise ValueError(f"{d} has no class subfolders; expected {d}/<class>/<image>")
        n = sum(
            1
            for c in classes[split]
            for f in (d / c).iterdir()
            if f.suffix.lower() in IMG_EXTENSIONS
        )
        counts[split] = n
    if classes["train"] != classes["val"]:
        only = sorted(set(classes["train"]) ^ set(classes["val"]))[:5]
        raise ValueError(
            f"{root}: train/ and val/ class folders differ (e.g. {only}); labels would not match"
        )
    return {
        "root": str(root),
        "num_classes": len(classes["train"]),
        "train": counts["train"],
        "val": counts["val"],
    }


def load_imagenet_like(root: str | os.PathLike[str]) -> ImageSplits:
    """ImageNet-style splits from an ImageFolder tree or a local ``save_to_disk`` HF data set."""
    root = Path(root)
    if (root / "dataset_dict.json").exists():
        import datasets

        dd = datasets.load_from_disk(str(root))
        val_name = next((n for n in VAL_DIR_NAMES if n in dd), None)
        if "train" not in dd or val_name is None:
            raise ValueError(
                f"{root}: HF data set needs 'train' and 'val'/'validation' splits, has {list(dd)}"
            )
        num_classes = dd["train"].features["label"].num_classes
        return ImageSplits(HFImageSet(dd["train"]), HFImageSet(dd[val_name]), num_classes, "pil")
    from torchvision.datasets import ImageFolder

    info = check_image_folder(root)
    train = ImageFolder(str(root / "train"))
    val = ImageFolder(str(_val_dir(root)))
    return ImageSplits(train, val, info["num_classes"], "pil")


def _channel_stats(images: Tensor, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Chunked float64 sums keep the peak memory small for 60k-image sets.
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for chunk in images.split(8192):
        x = chunk.double() * scale
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def load_digits_splits() -> ImageSplits:
    """sklearn's 8×8 digits (1797 images, bundled with sklearn) with a fixed 1437/360 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; scale to [0, 1] like any 8-bit image.
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    val_idx, train_idx = order[:DIGITS_VAL_SIZE], order[DIGITS_VAL_SIZE:]
    # Pixel values are 0..16; scale to [0, 1] like any 8-bit image.
    mean, std = _channel_stats(images[train_idx], 1 / 16)
    return ImageSplits(
        TensorImageSet(images[train_idx], labels[train_idx], 1 / 16),
        TensorImageSet(images[val_idx], labels[val_idx], 1 / 16),
        10,
        "tensor",
        mean,
        std,
        hflip=False,
    )


def read_idx_gz(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array of its declared shape."""
    with gzip.open(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path} is not a uint8 IDX file")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for shape {shape}")
    return data.reshape(shape)


def fashion_mnist_dir(path: str = "") -> Path:
    """The folder holding Fashion-MNIST's ``*-ubyte.gz`` files (data.path or the Debian one)."""
    return Path(path).expanduser() if path else FASHION_MNIST_DIR


def load_fashion_mnist_splits(path: str = "") -> ImageSplits:
    """Fashion-MNIST (60k train / 10k val, 28×28) from the Debian ``dataset-fashion-mnist`` files."""
    root = fashion_mnist_dir(path)
    tensors = {}
    for split, (img_name, lbl_name) in FASHION_MNIST_FILES.items():
        img_path, lbl_path = root / img_name, root / lbl_name
        if not img_path.is_file() or not lbl_path.is_file():
            raise missing_data_error(
                f"Fashion-MNIST ({img_name})",
                root,
                "apt-get install dataset-fashion-mnist; weyl prepare fashion_mnist",
            )
        images = torch.from_numpy(read_idx_gz(img_path).copy()).unsqueeze(1)
        labels = torch.from_numpy(read_idx_gz(lbl_path).astype(np.int64))
        tensors[split] = (images, labels)
    mean, std = _channel_stats(tensors["train"][0], 1 / 255)
    return ImageSplits(
        TensorImageSet(*tensors["train"], 1 / 255),
        TensorImageSet(*tensors["val"], 1 / 255),
        10,
        "tensor",
        mean,
        std,
        hflip=True,
    )


def imagenet_dir(path: str = "") -> Path:
    """data.path, else ``<data root>/imagenet``."""
    return Path(path).expanduser() if path else data_root() / "imagenet"


def load_image_splits(name: str, path: str = "") -> ImageSplits:
    """Splits of a named image set: ``digits``, ``fashion_mnist``, or an ImageNet-like folder."""
    if name == "digits":
        return load_digits_splits()
    if name == "fashion_mnist":
        return load_fashion_mnist_splits(path)
    root = (
        imagenet_dir(path)
        if name == "imagenet"
        else Path(path).expanduser()
        if path
        else data_root() / name
    )
    if not (root / "dataset_dict.json").exists() and not (root / "train").is_dir():
        raise missing_data_error(
            f"image data set {name!r} (ImageFolder train/ + val/ or a HF save_to_disk folder)",
            root,
            f"weyl prepare imagenet --path {root}",
        )
    return load_imagenet_like(root)
