"""What differs between language modelling and image classification: batch → loss, eval metric.

The trainer is one loop for both; a task object says how to turn model outputs into a loss,
how many throughput units (tokens or images) a batch holds, and how to summarise an eval pass.
Eval sums are returned as a tensor so the trainer can all-reduce them across ranks before
:meth:`Task.eval_metrics` turns them into means.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class Task(Protocol):
    """The per-task part of the trainer."""

    name: str
    unit: str  # "tokens" or "images": what throughput counts

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Training loss (a scalar mean over the batch)."""
        ...

    def units(self, inputs: Tensor) -> int:
        """How many throughput units the batch ``inputs`` holds."""
        ...

    def eval_sums(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-batch sums (fp64, 1-D) to be added over batches and ranks."""
        ...

    def eval_metrics(self, sums: Tensor) -> dict[str, float]:
        """Turn summed eval statistics into named metrics (keys without the ``eval/`` prefix)."""
        ...


class LanguageModelingTask:
    """Next-token cross-entropy; eval reports mean token loss and perplexity."""

    name = "lm"
    unit = "tokens"

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy over all tokens; logits are upcast so bf16 autocast stays exact enough."""
        return F.cross_entropy(outputs.float().flatten(0, -2), targets.flatten())

    def units(self, inputs: Tensor) -> int:
        """Tokens in the batch."""
        return inputs.numel()

    def eval_sums(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """[sum of token losses, token count]."""
        total = F.cross_entropy(outputs.float().flatten(0, -2), targets.flatten(), reduction="sum")
        return torch.stack(
            [
                total.double(),
                torch.tensor(targets.numel(), dtype=torch.float64, device=total.device),
            ]
        )

    def eval_metrics(self, sums: Tensor) -> dict[str, float]:
        """``loss`` (mean nats per token) and ``ppl``."""
        loss = float(sums[0] / sums[1])
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0))}


class ClassificationTask:
    """Image classification: soft-target CE when mixup/cutmix mixed the labels, else
    label-smoothed CE; eval reports top-1 accuracy and plain CE on the hard labels."""

    name = "classification"
    unit = "images"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"data.label_smoothing={label_smoothing} must be in [0, 1)")
        self.label_smoothing = label_smoothing

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean CE; ``targets`` are class indices (B,) or soft distributions (B, C)."""
        logits = outputs.float()
        if targets.is_floating_point():
            # Mixup/cutmix already folded label smoothing into the soft targets.
            return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def units(self, inputs: Tensor) -> int:
        """Images in the batch."""
        return inputs.shape[0]

    def eval_sums(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """[sum of CE, number correct (top-1), number of images]."""
        logits = outputs.float()
        total = F.cross_entropy(logits, targets, reduction="sum")
        correct = (logits.argmax(dim=-1) == targets).sum()
        n = torch.tensor(targets.shape[0], device=logits.device)
        return torch.stack([total.double(), correct.double(), n.double()])

    def eval_metrics(self, sums: Tensor) -> dict[str, float]:
        """``loss`` (mean CE) and ``top1`` accuracy in percent."""
        return {"loss": float(sums[0] / sums[2]), "top1": float(100.0 * sums[1] / sums[2])}


def build_task(kind: str, *, label_smoothing: float = 0.0) -> Task:
    """The task for a data bundle's ``task`` string ("lm" or "classification")."""
    if kind == "lm":
        return LanguageModelingTask()
    if kind == "classification":
        return ClassificationTask(label_smoothing)
    raise ValueError(f"data task {kind!r} is unknown; expected 'lm' or 'classification'")
