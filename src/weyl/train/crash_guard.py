"""Detect a diverging run at the step it happens: non-finite loss/grad norm, a loss far above
the loss at initialisation (from step 1), or a spike over the running median (after a window).

The trainer checks *before* ``optimizer.step()``, so a flagged update is never applied and
never checkpointed: the newest checkpoint always holds a good state.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any


def chance_loss(num_outputs: int) -> float:
    """Cross-entropy of a uniform guess over ``num_outputs`` classes/tokens: ln(n).

    A freshly initialised classifier or LM predicts close to uniform, so this is the loss at
    step 1 whatever the targets are (hard, label-smoothed or mixed: any target distribution
    against a uniform prediction costs exactly ln(n)).
    """
    if num_outputs < 2:
        raise ValueError(f"a loss bound needs at least 2 outputs, got {num_outputs}")
    return math.log(num_outputs)


class CrashGuard:
    """Flags non-finite values, a loss above ``divergence_bound``, and spikes.

    ``divergence_bound`` (``trainer.divergence_factor`` × :func:`chance_loss`; None or 0 turns it
    off) holds from the very first update, when the spike test has no history yet. The spike
    test compares with ``spike_factor`` × the median of the last ``spike_window`` accepted losses
    and is only trusted once the window is full (a window of 0 or a factor ≤ 0 disables it).
    """

    def __init__(
        self,
        spike_window: int = 50,
        spike_factor: float = 3.0,
        divergence_bound: float | None = None,
        bound_origin: str = "",
    ) -> None:
        if spike_window < 0:
            raise ValueError(f"trainer.spike_window={spike_window} must be >= 0")
        self.spike_window = spike_window
        self.spike_factor = spike_factor
        self.divergence_bound = divergence_bound or None
        self.bound_origin = bound_origin  # how the bound was derived, for the reason string
        self.history: deque[float] = deque(maxlen=max(spike_window, 1))

    def check(self, loss: float, grad_norm: float | None = None) -> str | None:
        """Reason string when this update must not be applied, else None (and record it)."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if grad_norm is not None and not math.isfinite(grad_norm):
            return f"non-finite grad norm ({grad_norm})"
        if self.divergence_bound is not None and loss > self.divergence_bound:
            origin = f" = {self.bound_origin}" if self.bound_origin else ""
            return (
                f"divergence: loss {loss:.4g} > {self.divergence_bound:.4g}{origin} "
                "(trainer.divergence_factor)"
            )
        if (
            self.spike_window > 0
            and self.spike_factor > 0
            and len(self.history) == self.spike_window
        ):
            median = statistics.median(self.history)
            if loss > self.spike_factor * median:
                return (
                    f"loss spike: {loss:.4g} > {self.spike_factor:g} x running median "
                    f"{median:.4g} over {self.spike_window} steps"
                )
        self.history.append(loss)
        return None

    def state_dict(self) -> dict[str, Any]:
        """The loss window and the bound, so a resumed run flags exactly what the original would."""
        return {"history": list(self.history), "divergence_bound": self.divergence_bound}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the loss window. The bound stays the one of the current config: it is a pure
        function of the config (same config, same bound), and a user who resumes with another
        ``trainer.divergence_factor`` after a crash means the new one."""
        self.history.clear()
        self.history.extend(float(x) for x in state["history"])


def divergence_bound_for(factor: float, model_cfg: Any, data: Any) -> tuple[float | None, str]:
    """(``factor`` × ln(outputs), how it was derived) for a run, or (None, "") when disabled.

    The outputs are the model's (``vocab_size`` or ``num_classes``: its logits' width sets the
    loss at initialisation), else the data set's.
    """
    if not factor:
        return None, ""
    for owner, key in (
        (model_cfg, "vocab_size"),
        (model_cfg, "num_classes"),
        (data, "vocab_size"),
        (data, "num_classes"),
    ):
        n = getattr(owner, key, None)
        if isinstance(n, int) and n >= 2:
            return factor * chance_loss(n), f"{factor:g} x ln({n})"
    return None, ""
