"""GI-Adam (Kalra & Barkeshli 2024, "Why Warmup the Learning Rate?", arXiv 2406.09405): AdamW
whose second moment starts at the square of the first gradient instead of zero.

What is implemented: for every tensor, at its first update, ``v₀ = g₀²`` (``g₀`` the
gradient of that first update) and ``m₀ = 0``; every later line is torch's AdamW, bias
correction included. So the first update uses ``v₁ = β₂v₀ + (1−β₂)g₀² = g₀²`` and
``v̂₁ = g₀²/(1−β₂)``: its size is about ``lr·√(1−β₂)`` per coordinate instead of Adam's
``lr``, and the bias correction lets it grow back to ``lr`` as ``√(1−β₂ᵗ)`` — the warmup-
like effect the paper reports, without a schedule. Only the state's starting value differs
from AdamW, so we subclass torch's AdamW rather than re-implement its update.

Source check: only the paper's abstract ("an initialization for the variance in Adam") and
secondary summaries were readable offline when this was written; that the bias correction
stays as in Adam is our reading, to be confirmed against the paper's GI-Adam algorithm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GIAdam(torch.optim.AdamW):
    """torch.optim.AdamW with ``exp_avg_sq`` initialised to ``grad²`` at a tensor's first step."""

    def __init__(self, params, **kwargs) -> None:
        if kwargs.get("amsgrad"):
            raise ValueError("GIAdam: amsgrad=True is not supported (GI-Adam is defined on Adam)")
        super().__init__(params, **kwargs)

    @torch.no_grad()
    def _seed_second_moment(self) -> None:
        for group in self.param_groups:
            on_device = group.get("capturable") or group.get("fused")
            for p in group["params"]:
                if p.grad is None or len(self.state[p]) > 0:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("GIAdam does not support sparse gradients")
                # The keys torch's Adam creates for a fresh tensor; it skips its own
                # initialisation when the state is already populated.
                self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device)
                    if on_device
                    else torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": p.grad.detach().square().to(p.dtype),
                }

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Seed ``v₀ = g₀²`` for tensors taking their first step, then AdamW's update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._seed_second_moment()
        super().step()
        return loss
