"""Model FLOPs utilisation and memory, the numbers a GPU user checks first."""

from __future__ import annotations

import torch
from torch import nn

# Dense bf16 tensor-core peak per GPU (vendor datasheets, no sparsity), by name fragment.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Datasheet bf16 peak of ``device``'s GPU, or None for CPUs and unknown GPUs."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, flops in PEAK_BF16_FLOPS.items():
        if fragment in name:
            return flops
    return None


def training_flops_per_sample(model: nn.Module, sample: torch.Tensor) -> float:
    """Training FLOPs of one sample: 3× its forward FLOPs as counted by torch's FlopCounterMode.

    Counting the real forward covers every architecture alike (GPT, ViT, Swin's windows,
    Flatten's linear attention); backward is taken as twice the forward, the usual MFU
    convention (PaLM App. B). The model runs once in eval mode without autograd, so no RNG is
    drawn, no gradient is touched, and the caller's mode is restored. Under FSDP2 every rank
    must call it (the forward all-gathers). FlopCounterMode counts SDPA only for its CUDA
    kernels: on CPU attention is missing from the count (MFU is reported on GPUs only).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(sample)
    finally:
        model.train(was_training)
    return 3.0 * counter.get_total_flops() / sample.shape[0]


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated CUDA memory since the start (GiB), or None on CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
