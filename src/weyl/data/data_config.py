"""The config of every data kind, checked when it is built (no torch import here).

``kind`` picks the dataclass (:data:`DATA_CONFIGS`); ``configs/data/<name>.yaml`` extends the
kind's schema (``defaults: [<kind>_schema, _self_]``) so Hydra type-checks it while composing.
Whether the data fits the model (text needs a GPT, context within the model's) is checked by
the run's root config, :class:`weyl.config.TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from weyl.value_checks import ConfigError, one_of, require


class TokenizerName(StrEnum):
    """``gpt2`` (tiktoken BPE), ``char`` (the corpus's characters) or ``bytes``."""

    gpt2 = "gpt2"
    char = "char"
    bytes = "bytes"


@dataclass
class DataConfig:
    """Keys shared by every data kind."""

    KIND: ClassVar[str] = ""
    kind: str = ""
    # Data set name, e.g. "kjv", "openwebtext", "imagenet", "digits", "fashion_mnist".
    name: str = "kjv"
    # Directory with the prepared data; "" means the data set's default location.
    path: str = ""
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.kind != self.KIND:
            data_config_class(self.kind)  # an unknown kind is named as such
            raise ConfigError(
                f"data.kind: '{self.kind}' does not match these {self.KIND} data keys; "
                f"choose a {self.kind} data set with data=<name>"
            )
        require(self.num_workers >= 0, "data.num_workers", f"must be >= 0, got {self.num_workers}")


@dataclass
class TextDataConfig(DataConfig):
    """Token streams in uint16 memmaps (train.bin / val.bin), sampled as contiguous blocks."""

    KIND: ClassVar[str] = "text"
    kind: str = "text"
    tokenizer: TokenizerName = TokenizerName.char
    block_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokenizer = one_of(TokenizerName, self.tokenizer, "data.tokenizer")
        require(self.block_size > 0, "data.block_size", f"must be > 0, got {self.block_size}")


@dataclass
class ImageDataConfig(DataConfig):
    """Image classification through timm transforms (Table 2 augmentations)."""

    KIND: ClassVar[str] = "image"
    kind: str = "image"
    name: str = "digits"
    img_size: int = 224
    # timm auto-augment string; "" disables RandAugment.
    randaugment: str = "rand-m9-mstd0.5"
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    random_erasing: float = 0.0
    crop_pct: float = 0.875
    color_jitter: float = 0.4
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.img_size > 0, "data.img_size", f"must be > 0, got {self.img_size}")
        for key in ("mixup", "cutmix"):  # Beta-distribution alphas
            value = getattr(self, key)
            require(value >= 0.0, f"data.{key}", f"must be >= 0 (0 disables), got {value}")
        for key in ("label_smoothing", "random_erasing"):  # probabilities
            value = getattr(self, key)
            require(0.0 <= value < 1.0, f"data.{key}", f"must be in [0, 1), got {value}")
        require(
            0.0 < self.crop_pct <= 1.0, "data.crop_pct", f"must be in (0, 1], got {self.crop_pct}"
        )


# kind → its config; the schemas Hydra checks configs/data/*.yaml against.
DATA_CONFIGS: dict[str, type[DataConfig]] = {
    cls.KIND: cls for cls in (TextDataConfig, ImageDataConfig)
}


def data_config_class(kind: object) -> type[DataConfig]:
    """The config dataclass of ``kind`` (``data.kind``), or a one-line ConfigError."""
    if kind not in DATA_CONFIGS:
        raise ConfigError(f"data.kind: unknown '{kind}'; choose one of: {', '.join(DATA_CONFIGS)}")
    return DATA_CONFIGS[kind]
