"""Table 2 image augmentations, made reproducible for exact resume.

PIL sources (ImageNet) use timm's own ``create_transform``: RandomResizedCrop + flip +
RandAugment (``rand-m9-mstd0.5``) + random erasing for training, resize/centre-crop at
``crop_pct`` for eval, both with bicubic interpolation. Tensor sources (sklearn digits,
Fashion-MNIST) use a small tensor pipeline: grey → 3 channels, a random shift of ±1/8 of the
side, an optional flip, resize to ``img_size``, normalisation with the set's own statistics,
and timm's random erasing. PIL RandAugment is skipped there on purpose: its photometric and
geometric ops are tuned for 224 px photos and wreck 8×8 glyphs. Mixup/CutMix and label
smoothing go through timm's ``Mixup`` for both.

Randomness: every sample's augmentation is drawn under RNGs seeded from
``(seed, epoch, index)`` and the global RNG states are restored afterwards, so a resumed run
sees the same augmented pixels and the trainer's own RNG streams are untouched. Mixup draws
from its own NumPy state, which the batch stream checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from weyl.data.token_blocks import stream_seed

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch (CPU) RNGs for the block, then restore their states."""
    # torch.manual_seed would also queue a lazy CUDA seeding (with a captured stack trace) on
    # every call; transforms only draw from the CPU default generator, so seed just that.
    cpu = torch.default_generator
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), cpu.get_state()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    cpu.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        cpu.set_state(torch_state)


def _check_interpolation(name: str) -> None:
    if name not in INTERPOLATIONS:
        raise ValueError(
            f"data.interpolation={name!r} is unknown; choose one of {', '.join(INTERPOLATIONS)}"
        )


def pil_train_transform(cfg: Any) -> Callable[[Any], Tensor]:
    """timm training transform of Table 2 (RandAugment, flip, RandomResizedCrop, erasing)."""
    from timm.data import create_transform

    _check_interpolation(cfg.interpolation)
    return create_transform(
        input_size=cfg.img_size,
        is_training=True,
        auto_augment=cfg.randaugment or None,
        color_jitter=cfg.color_jitter,
        re_prob=cfg.random_erasing,
        re_mode="pixel",
        interpolation=cfg.interpolation,
    )


def pil_eval_transform(cfg: Any) -> Callable[[Any], Tensor]:
    """timm eval transform: resize to img_size / crop_pct, centre crop, normalise."""
    from timm.data import create_transform

    _check_interpolation(cfg.interpolation)
    if not 0.0 < cfg.crop_pct <= 1.0:
        raise ValueError(f"data.crop_pct must be in (0, 1], got {cfg.crop_pct}")
    return create_transform(
        input_size=cfg.img_size,
        is_training=False,
        crop_pct=cfg.crop_pct,
        interpolation=cfg.interpolation,
    )


class TensorImageTransform:
    """Augment/normalise a float ``(C, H, W)`` image in [0, 1] into ``(3, img_size, img_size)``.

    All randomness comes from the ``generator`` argument (no global RNG is touched), which
    keeps the per-sample cost of these tiny images low.
    """

    uses_generator = True

    def __init__(
        self,
        img_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        train: bool,
        hflip: bool = False,
        random_erasing: float = 0.0,
        interpolation: str = "bicubic",
    ) -> None:
        _check_interpolation(interpolation)
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"data.random_erasing must be in [0, 1], got {random_erasing}")
        self.img_size, self.train, self.hflip = img_size, train, hflip
        self.interpolation = interpolation
        self.erase_prob = random_erasing if train else 0.0
        # Grey images are replicated to 3 channels so the same models serve every data set.
        self.mean, self.std = (
            torch.tensor(v, dtype=torch.float32).view(-1, 1, 1).expand(3, 1, 1).clone()
            for v in (mean, std)
        )

    def _erase(self, img: Tensor, g: torch.Generator) -> Tensor:
        # timm's RandomErasing ("pixel" mode, one box, area 2–33%, aspect log-uniform in
        # [0.3, 1/0.3]), drawing from ``g`` instead of Python's global RNG.
        _, h, w = img.shape
        for _ in range(10):
            area = h * w * (0.02 + (1 / 3 - 0.02) * float(torch.rand((), generator=g)))
            log_r = math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * float(
                torch.rand((), generator=g)
            )
            eh = round(math.sqrt(area * math.exp(log_r)))
            ew = round(math.sqrt(area / math.exp(log_r)))
            if 0 < eh < h and 0 < ew < w:
                top = int(torch.randint(0, h - eh + 1, (), generator=g))
                left = int(torch.randint(0, w - ew + 1, (), generator=g))
                img = img.clone()
                img[:, top : top + eh, left : left + ew] = torch.randn(
                    (img.shape[0], eh, ew), generator=g
                )
                break
        return img

    def __call__(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        g = generator if generator is not None else torch.default_generator
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        if self.train:
            h, w = img.shape[-2:]
            pad = max(1, h // 8)
            padded = F.pad(img, (pad, pad, pad, pad))
            dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
            img = padded[:, dy : dy + h, dx : dx + w]
            if self.hflip and float(torch.rand((), generator=g)) < 0.5:
                img = img.flip(-1)
        if img.shape[-1] != self.img_size or img.shape[-2] != self.img_size:
            mode = self.interpolation
            kwargs = {} if mode == "nearest" else {"align_corners": False}
            img = F.interpolate(
                img[None], size=(self.img_size, self.img_size), mode=mode, **kwargs
            )[0]
            img = img.clamp(0.0, 1.0)  # bicubic overshoots
        img = (img - self.mean) / self.std
        if self.erase_prob > 0 and float(torch.rand((), generator=g)) < self.erase_prob:
            img = self._erase(img, g)
        return img.contiguous()


class SeededTransformDataset(torch.utils.data.Dataset):
    """Applies ``transform`` to ``base[index]`` with randomness seeded from ``(seed, epoch, index)``.

    Transforms marked ``uses_generator`` get a private ``torch.Generator``; others (timm's PIL
    pipeline, which draws from the global Python/NumPy/torch RNGs) run under
    :func:`seeded_rngs`.
    """

    def __init__(self, base: Any, transform: Callable[..., Tensor], seed: int = 0) -> None:
        self.base, self.transform, self.seed = base, transform, seed
        self._own_generator = bool(getattr(transform, "uses_generator", False))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        img, label = self.base[index]
        sample_seed = stream_seed(self.seed, epoch, index)
        if self._own_generator:
            return self.transform(img, generator=torch.Generator().manual_seed(sample_seed)), int(
                label
            )
        with seeded_rngs(sample_seed):
            return self.transform(img), int(label)


class SeededMixup:
    """timm ``Mixup``/CutMix with its own NumPy RNG state: ``(x, int y) → (x, soft y)``."""

    def __init__(
        self,
        num_classes: int,
        *,
        mixup: float,
        cutmix: float,
        label_smoothing: float,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        from timm.data import Mixup

        self.mixup = Mixup(
            mixup_alpha=mixup,
            cutmix_alpha=cutmix,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )
        self._state = np.random.RandomState(stream_seed(seed, rank, 7) % (2**32)).get_state()

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] % 2:
            raise ValueError(f"mixup/cutmix need an even batch size, got {x.shape[0]}")
        saved = np.random.get_state()
        np.random.set_state(self._state)
        try:
            out = self.mixup(x, y)
        finally:
            self._state = np.random.get_state()
            np.random.set_state(saved)
        return out

    def state_dict(self) -> dict[str, Any]:
        """NumPy MT19937 state as tensors/ints (loadable with ``torch.load(weights_only=True)``)."""
        name, keys, pos, has_gauss, cached = self._state
        return {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
            "name": str(name),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        keys = state["keys"].numpy().astype(np.uint32)
        self._state = (
            state["name"],
            keys,
            state["pos"],
            state["has_gauss"],
            state["cached_gaussian"],
        )


def build_mix(
    cfg: Any, num_classes: int, *, batch_size: int, seed: int = 0, rank: int = 0
) -> SeededMixup | None:
    """Mixup/CutMix of ``cfg`` (None when both alphas are 0); fails early on an odd batch."""
    for key in ("mixup", "cutmix", "label_smoothing", "random_erasing"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"data.{key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    if batch_size % 2:
        raise ValueError(
            f"mixup/cutmix need an even per-rank batch size, got {batch_size}; "
            "change the batch size or set data.mixup=0 data.cutmix=0"
        )
    return SeededMixup(
        num_classes,
        mixup=cfg.mixup,
        cutmix=cfg.cutmix,
        label_smoothing=cfg.label_smoothing,
        seed=seed,
        rank=rank,
    )
