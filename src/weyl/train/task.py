"""What differs between language modelling and image classification: batch → loss, eval metric.

The trainer is one loop for both; a task object says how to turn model outputs into a loss,
how many throughput units (tokens or images) a batch holds, and how to summarise an eval pass.
Eval sums are returned as a tensor so the trainer can all-reduce them across ranks before
:meth:`Task.eval_metrics` turns them into means. :meth:`Task.aux_losses` are terms added to the
training objective only (PaLM's z-loss): the logged, guarded and evaluated loss stays the
cross-entropy, and each term is logged under its own name.
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

    def aux_losses(self, outputs: Tensor) -> dict[str, Tensor]:
        """Named scalar terms added to the training objective (not to ``loss``); often empty."""
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


def z_loss(logits: Tensor, coefficient: float) -> Tensor:
    """PaLM's auxiliary loss ``coefficient · mean over tokens of log²Z``, Z = Σ_v exp(logit_v):
    it pulls the softmax normaliser towards 1 so the output logits cannot drift (fp32)."""
    return coefficient * torch.logsumexp(logits.float(), dim=-1).square().mean()


class LanguageModelingTask:
    """Next-token cross-entropy; eval reports mean token loss and perplexity.

    ``z_loss`` > 0 adds :func:`z_loss` of the LM head's logits to the training objective
    (``trainer.z_loss``; PaLM used 1e-4).
    """

    name = "lm"
    unit = "tokens"

    def __init__(self, z_loss: float = 0.0) -> None:
        if not z_loss >= 0.0:
            raise ValueError(f"trainer.z_loss={z_loss} must be >= 0 (0 turns it off)")
        self.z_loss = z_loss

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy over all tokens; logits are upcast so bf16 autocast stays exact enough."""
        return F.cross_entropy(outputs.float().flatten(0, -2), targets.flatten())

    def aux_losses(self, outputs: Tensor) -> dict[str, Tensor]:
        """``{"z_loss": coefficient · mean log²Z}`` when ``trainer.z_loss`` > 0, else empty."""
        return {"z_loss": z_loss(outputs, self.z_loss)} if self.z_loss > 0 else {}

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

    def aux_losses(self, outputs: Tensor) -> dict[str, Tensor]:
        """None: the z-loss is defined on a language model's head."""
        return {}

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


def build_task(kind: str, *, label_smoothing: float = 0.0, z_loss: float = 0.0) -> Task:
    """The task for a data bundle's ``task`` string ("lm" or "classification")."""
    if kind == "lm":
        return LanguageModelingTask(z_loss)
    if kind == "classification":
        if z_loss:
            raise ValueError(
                f"trainer.z_loss={z_loss}: the z-loss acts on a language model's head; "
                "set trainer.z_loss=0 for image classification"
            )
        return ClassificationTask(label_smoothing)
    raise ValueError(f"data task {kind!r} is unknown; expected 'lm' or 'classification'")
