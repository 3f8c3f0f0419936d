"""Typed schemas of every config group.

Hydra composes plain YAML from ``configs/`` and ``recipes/``; :func:`weyl.config.validate.validate`
turns the result into these dataclasses, so factories receive typed data and never read
Hydra. Families within a group (GPT vs timm ViT, text vs image data) have their own schema,
chosen by the group's discriminator key (``model.family``, ``data.kind``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------- model


@dataclass
class ModelCommon:
    """Keys shared by every model family."""

    family: str = "gpt"
    # σReparam (Zhai et al. 2023) applied as a transform after the model is built.
    sigma_reparam: bool = False
    # "pure" σReparam: also remove the LayerNorms.
    sigma_reparam_pure: bool = False


@dataclass
class GPTModelConfig(ModelCommon):
    """nanoGPT-style pre-LN decoder."""

    family: str = "gpt"
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304
    dropout: float = 0.0
    bias: bool = False
    # "nanogpt" (N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer)),
    # "xavier" or "trunc_xavier" (Table 2 names).
    init: str = "nanogpt"


@dataclass
class ViTModelConfig(ModelCommon):
    """timm VisionTransformer built from explicit dimensions."""

    family: str = "vit"
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    # "timm" (timm's own init) or "trunc_xavier" / "xavier" (Table 2 names).
    init: str = "trunc_xavier"


@dataclass
class SwinModelConfig(ModelCommon):
    """timm SwinTransformer built from explicit dimensions."""

    family: str = "swin"
    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    init: str = "timm"


@dataclass
class FlattenSwinModelConfig(SwinModelConfig):
    """Swin with Focused Linear Attention (Han et al. 2023)."""

    family: str = "flatten_swin"
    # One letter per stage: L = focused linear attention, S = softmax window attention.
    attention_pattern: str = "LLSS"
    focusing_factor: int = 3
    kernel_size: int = 5
    window_size: int = 56


MODEL_SCHEMAS: dict[str, type] = {
    "gpt": GPTModelConfig,
    "vit": ViTModelConfig,
    "swin": SwinModelConfig,
    "flatten_swin": FlattenSwinModelConfig,
}

# ---------------------------------------------------------------- data


@dataclass
class DataCommon:
    kind: str = "text"
    # Data set name, e.g. "kjv", "openwebtext", "imagenet", "digits", "fashion_mnist".
    name: str = "kjv"
    # Directory with the prepared data; "" means the data set's default location.
    path: str = ""
    num_workers: int = 0


@dataclass
class TextDataConfig(DataCommon):
    """Token streams in uint16 memmaps (train.bin / val.bin), sampled as contiguous blocks."""

    kind: str = "text"
    name: str = "kjv"
    # "gpt2" (tiktoken BPE), "char" (characters of the corpus) or "bytes".
    tokenizer: str = "char"
    block_size: int = 64


@dataclass
class ImageDataConfig(DataCommon):
    """Image classification through timm transforms (Table 2 augmentations)."""

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


DATA_SCHEMAS: dict[str, type] = {"text": TextDataConfig, "image": ImageDataConfig}

# ---------------------------------------------------------------- optimizer / schedule


@dataclass
class OptimConfig:
    # "adamw" (torch), "adamw2" (Algorithm 1), "sgd" (torch, momentum), "sgdw2" (SGD-momentum + the clip)
    name: str = "adamw2"
    lr: float = 6e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    # AdamW² threshold on lr·σ₁(ΔW)/σ₁(W); null disables the clip.
    tau: float | None = 0.01
    power_iters: int = 1
    momentum: float = 0.9


@dataclass
class ScheduleConfig:
    # "cosine" (decay to min_lr) or "constant"
    name: str = "cosine"
    warmup_steps: int = 0
    # Alternative to warmup_steps for epoch-based recipes (converted with steps per epoch).
    warmup_epochs: float = 0.0
    min_lr: float = 0.0


# ---------------------------------------------------------------- trainer / logging / diagnostics


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    # Epoch-based recipes set epochs > 0; max_steps is then derived from the data size.
    epochs: float = 0.0
    global_batch_size: int = 32
    # Per-process micro batch; 0 = global_batch_size / world_size (no accumulation).
    micro_batch_size: int = 0
    grad_clip: float = 0.0
    # "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16"
    precision: str = "auto"
    compile: bool = False
    device: str = "auto"
    # "ddp" or "fsdp" (FSDP2 fully_shard per block); ignored in a single process.
    strategy: str = "ddp"
    eval_every: int = 250
    eval_batches: int = 20
    log_every: int = 10
    ckpt_every: int = 250
    keep_last: int = 2
    # "auto" (continue the run in run_dir if its config is the same), "force" (continue it
    # even if trajectory keys changed), "never" (start fresh; the old run is moved aside), or a
    # checkpoint path. See weyl.train.launch.
    resume: str = "auto"
    # Crash guard: stop (or roll back) on non-finite loss/grad or a loss spike.
    spike_window: int = 50
    spike_factor: float = 3.0
    # From step 1: stop when the loss exceeds this factor × the loss at initialisation, ln(vocab)
    # for LM or ln(classes) for classification; 0 disables. Measured in the first steps of
    # healthy runs: GPT <= 1.08x; every paper recipe at toy scale <= 2.94x (ViT-L, 3 classes,
    # batch 4); AdamW at lr=1 on smoke/gpt_tiny peaks at 3.8x and recovers; at lr=10, 226x.
    divergence_factor: float = 10.0
    on_crash: str = "stop"
    # Rollbacks allowed before a run that keeps diverging is stopped (on_crash: rollback).
    max_rollbacks: int = 3
    # Under Slurm, rank 0 requeues the job after a preemption signal (SIGUSR1/2, SIGTERM).
    requeue: bool = True
    ema: bool = False


@dataclass
class WandbConfig:
    enabled: bool = False
    # "offline", "online", "disabled", or null: the WANDB_MODE environment variable, else offline
    mode: str | None = None
    project: str = "weyl"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    name: str | None = None


@dataclass
class LoggerConfig:
    # The rich progress bar on a terminal (under console: auto).
    progress: bool = True
    # Human-readable log on stdout: "auto" (the bar on a terminal, plain lines otherwise, e.g. a
    # Slurm .out), "lines" (plain lines always) or "off".
    console: str = "auto"
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class DiagnosticsConfig:
    enabled: bool = True
    every: int = 100
    probe_batch_size: int = 4
    sec_s: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # The 15 terms of Fig. 1 (needs a backward pass on the probe batch).
    terms: bool = True
    # Per-head keys (attn/Lxx/hNN/...) besides the per-layer max/mean; off for very deep models.
    per_head: bool = True
    # Probe maps per layer whose SVD gives the effective rank (bounds the cost).
    rank_samples: int = 4
    # Save the first probe sample's attention maps (fp16, all heads) to <run_dir>/attention/
    # every N steps for Fig. 2/3 in `weyl report`; 0 = never (H·N² per layer: large for long contexts).
    attention_maps_every: int = 0
    # Collapse classifier thresholds (see weyl.diagnostics.collapse).
    entropy_collapse: float = 0.2
    sec_concentrated: float = 0.95


# ---------------------------------------------------------------- the whole run


@dataclass
class TrainConfig:
    name: str = "run"
    run_dir: str = "runs/${name}"
    seed: int = 0
    model: Any = field(default_factory=GPTModelConfig)
    data: Any = field(default_factory=TextDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
