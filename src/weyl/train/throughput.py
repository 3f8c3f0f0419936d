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


def count_parameters(model: nn.Module) -> int:
    """Total parameter count (global size under FSDP: DTensor ``numel`` is the full size)."""
    return sum(p.numel() for p in model.parameters())


def transformer_flops_per_token(n_params: int, n_layers: int, width: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·N for the matmuls plus 12·L·d·T for attention (PaLM App. B)."""
    return 6.0 * n_params + 12.0 * n_layers * width * seq_len


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated CUDA memory since the start (GiB), or None on CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
