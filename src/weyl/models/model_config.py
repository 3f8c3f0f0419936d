"""The config of every model family, checked when it is built (no torch import here).

``family`` picks the dataclass (:data:`MODEL_CONFIGS`); ``configs/model/<name>.yaml`` extends
the family's schema (``defaults: [<family>_schema, _self_]``), so Hydra type-checks a model's
keys while composing, and ``__post_init__`` checks their values when the config becomes objects.
Adding a family: a dataclass here, an entry in :data:`MODEL_CONFIGS`, its builder in
:mod:`weyl.models.factory`, and ``configs/model/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from weyl.value_checks import ConfigError, one_of, require


class GPTInit(StrEnum):
    """GPT weight init: nanoGPT's N(0, 0.02), or Table 2's (truncated) Xavier for the Linears."""

    nanogpt = "nanogpt"
    xavier = "xavier"
    trunc_xavier = "trunc_xavier"


class VisionInit(StrEnum):
    """ViT/Swin weight init: timm's own, or Table 2's (truncated) Xavier for the Linears."""

    timm = "timm"
    xavier = "xavier"
    trunc_xavier = "trunc_xavier"


class SigmaReparamInit(StrEnum):
    """σReparam's starting weights: the model's own, or ml-sigma-reparam's ``convert_to_sn`` redraw."""

    keep = "keep"
    official = "official"


@dataclass
class ModelConfig:
    """Keys shared by every model family."""

    FAMILY: ClassVar[str] = ""
    family: str = ""
    # σReparam (Zhai et al. 2023) applied as a transform after the model is built.
    sigma_reparam: bool = False
    # "pure" σReparam: also remove the LayerNorms.
    sigma_reparam_pure: bool = False
    # keep: the model's own weights (Ŵ₀ = W₀, the function at init is unchanged); official:
    # redraw as ml-sigma-reparam's convert_to_sn does (weights N(0, 0.02), biases nn.Linear's).
    sigma_reparam_init: SigmaReparamInit = SigmaReparamInit.keep
    # LayerNorm over head_dim on q and k before the dot product (GPT: ours; ViT: timm's).
    qk_norm: bool = False

    def __post_init__(self) -> None:
        if self.family != self.FAMILY:
            model_config_class(self.family)  # an unknown family is named as such
            raise ConfigError(
                f"model.family: '{self.family}' does not match these {self.FAMILY} model keys; "
                f"choose a {self.family} model with model=<name>"
            )
        require(
            not self.sigma_reparam_pure or self.sigma_reparam,
            "model.sigma_reparam_pure",
            "needs model.sigma_reparam=true",
        )
        self.sigma_reparam_init = one_of(
            SigmaReparamInit, self.sigma_reparam_init, "model.sigma_reparam_init"
        )
        require(
            self.sigma_reparam_init is SigmaReparamInit.keep or self.sigma_reparam,
            "model.sigma_reparam_init",
            "'official' redraws the σReparam layers' weights; needs model.sigma_reparam=true",
        )
        require(
            not (self.qk_norm and self.sigma_reparam_pure),
            "model.qk_norm",
            "pure σReparam removes every LayerNorm, q/k norms included; "
            "set model.sigma_reparam_pure=false or model.qk_norm=false",
        )


def _positive(cfg: object, *keys: str) -> None:
    for key in keys:
        value = getattr(cfg, key)
        require(value > 0, f"model.{key}", f"must be > 0, got {value}")


@dataclass
class GPTModelConfig(ModelConfig):
    """nanoGPT-style pre-LN decoder."""

    FAMILY: ClassVar[str] = "gpt"
    family: str = "gpt"
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304
    dropout: float = 0.0
    bias: bool = False
    init: GPTInit = GPTInit.nanogpt

    def __post_init__(self) -> None:
        super().__post_init__()
        self.init = one_of(GPTInit, self.init, "model.init")
        _positive(self, "n_layer", "n_head")
        require(
            self.n_embd > 0 and self.n_embd % self.n_head == 0,
            "model.n_embd",
            f"must be a positive multiple of model.n_head={self.n_head}, got {self.n_embd}",
        )
        _positive(self, "block_size", "vocab_size")
        require(
            0.0 <= self.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {self.dropout}"
        )


@dataclass
class VisionModelConfig(ModelConfig):
    """Keys of the timm image classifiers (ViT, Swin, Flatten-Swin)."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    init: VisionInit = VisionInit.timm

    def __post_init__(self) -> None:
        super().__post_init__()
        self.init = one_of(VisionInit, self.init, "model.init")
        _positive(self, "img_size", "patch_size", "num_classes", "embed_dim")
        require(
            0.0 <= self.drop_path_rate < 1.0,
            "model.drop_path_rate",
            f"must be in [0, 1), got {self.drop_path_rate}",
        )


@dataclass
class ViTModelConfig(VisionModelConfig):
    """timm VisionTransformer built from explicit dimensions."""

    FAMILY: ClassVar[str] = "vit"
    family: str = "vit"
    depth: int = 12
    num_heads: int = 12
    init: VisionInit = VisionInit.trunc_xavier

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "depth", "num_heads")
        require(
            self.embed_dim % self.num_heads == 0,
            "model.embed_dim",
            f"must be a multiple of model.num_heads={self.num_heads}, got {self.embed_dim}",
        )
        require(
            self.img_size % self.patch_size == 0,
            "model.img_size",
            f"must be a multiple of model.patch_size={self.patch_size}, got {self.img_size}",
        )


@dataclass
class SwinModelConfig(VisionModelConfig):
    """timm SwinTransformer built from explicit dimensions."""

    FAMILY: ClassVar[str] = "swin"
    family: str = "swin"
    patch_size: int = 4
    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    drop_path_rate: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            not self.qk_norm,
            "model.qk_norm",
            "timm's Swin WindowAttention (also Flatten-Swin's) has no q/k norm; "
            "set model.qk_norm=false",
        )
        require(
            len(self.depths) == len(self.num_heads),
            "model.num_heads",
            f"needs one entry per stage of model.depths ({len(self.depths)}), "
            f"got {len(self.num_heads)}",
        )
        _positive(self, "window_size")
        reduction = self.patch_size * 2 ** (len(self.depths) - 1)
        require(
            self.img_size % reduction == 0,
            "model.img_size",
            f"must be a multiple of model.patch_size·2^(stages-1)={reduction}, got {self.img_size}",
        )
        for i, heads in enumerate(self.num_heads):
            width = self.embed_dim * 2**i
            require(
                heads > 0 and width % heads == 0,
                f"model.num_heads[{i}]",
                f"must divide the stage width model.embed_dim·2^{i}={width}, got {heads}",
            )


@dataclass
class FlattenSwinModelConfig(SwinModelConfig):
    """Swin with Focused Linear Attention (Han et al. 2023)."""

    FAMILY: ClassVar[str] = "flatten_swin"
    family: str = "flatten_swin"
    # One letter per stage: L = focused linear attention, S = softmax window attention.
    attention_pattern: str = "LLSS"
    focusing_factor: int = 3
    kernel_size: int = 5
    window_size: int = 56

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            len(self.attention_pattern) == len(self.depths)
            and set(self.attention_pattern) <= {"L", "S"},
            "model.attention_pattern",
            f"needs one letter L or S per stage ({len(self.depths)}), "
            f"got '{self.attention_pattern}'",
        )
        require(
            self.focusing_factor >= 1,
            "model.focusing_factor",
            f"must be >= 1, got {self.focusing_factor}",
        )
        require(
            self.kernel_size >= 1 and self.kernel_size % 2 == 1,
            "model.kernel_size",
            f"must be a positive odd number, got {self.kernel_size}",
        )


# family → its config; the schemas Hydra checks configs/model/*.yaml against.
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    cls.FAMILY: cls
    for cls in (GPTModelConfig, ViTModelConfig, SwinModelConfig, FlattenSwinModelConfig)
}


def model_config_class(family: object) -> type[ModelConfig]:
    """The config dataclass of ``family`` (``model.family``), or a one-line ConfigError."""
    if family not in MODEL_CONFIGS:
        raise ConfigError(
            f"model.family: unknown '{family}'; choose one of: {', '.join(MODEL_CONFIGS)}"
        )
    return MODEL_CONFIGS[family]
