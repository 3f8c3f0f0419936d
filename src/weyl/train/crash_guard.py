"""Detect a diverging run at the step it happens: non-finite loss/grad norm or a loss spike.

The trainer checks *before* ``optimizer.step()``, so a flagged update is never applied and
never checkpointed: the newest checkpoint always holds a good state.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

CRASH_ACTIONS = ("stop", "rollback")


class CrashGuard:
    """Flags non-finite values and spikes above ``spike_factor`` × the running median loss.

    The median is over the last ``spike_window`` accepted losses and is only trusted once the
    window is full (a window of 0 or a factor ≤ 0 disables the spike test).
    """

    def __init__(self, spike_window: int = 50, spike_factor: float = 3.0) -> None:
        if spike_window < 0:
            raise ValueError(f"trainer.spike_window={spike_window} must be >= 0")
        self.spike_window = spike_window
        self.spike_factor = spike_factor
        self.history: deque[float] = deque(maxlen=max(spike_window, 1))

    def check(self, loss: float, grad_norm: float | None = None) -> str | None:
        """Reason string when this update must not be applied, else None (and record it)."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if grad_norm is not None and not math.isfinite(grad_norm):
            return f"non-finite grad norm ({grad_norm})"
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
        """The loss window, so a resumed run flags exactly what the original would have."""
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.history.clear()
        self.history.extend(float(x) for x in state["history"])
