"""Detect a diverging run: non-finite loss/grad norm, a loss far above the loss at
initialisation (from step 1), or a spike over the running median (after a window).

A flagged update is never applied and never checkpointed: the newest checkpoint always holds
a good state. :class:`CrashGuard` is the rule on host floats (one host sync per update to get
them); :class:`DeviceCrashGuard` evaluates the same rule on the device, as AMP's ``found_inf``
does, and raises a sticky device flag that an optimizer with a ``found_inf`` input (torch's
fused Adam/AdamW) obeys by skipping the update on the device; the host reads the verdict only
when it needs to (log, eval, diagnostics and checkpoint steps, see the trainer).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def chance_loss(num_outputs: int) -> float:
    """Cross-entropy of a uniform guess over ``num_outputs`` classes/tokens: ln(n).

    A freshly initialised classifier or LM predicts close to uniform, so this is the loss at
    step 1 whatever the targets are (hard, label-smoothed or mixed: any target distribution
    against a uniform prediction costs exactly ln(n)).
    """
    if num_outputs < 2:
        raise ValueError(f"a loss bound needs at least 2 outputs, got {num_outputs}")
    return math.log(num_outputs)


# Verdict codes, in the order the rules are tried.
OK, NON_FINITE_LOSS, NON_FINITE_GRAD_NORM, DIVERGENCE, SPIKE = range(5)


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
        median = statistics.median(self.history) if self._spike_armed() else math.nan
        code = self._verdict(loss, grad_norm, median)
        if code:
            return self.reason(code, loss, grad_norm, median)
        self.history.append(loss)
        return None

    def _spike_armed(self) -> bool:
        return (
            self.spike_window > 0
            and self.spike_factor > 0
            and len(self.history) == self.spike_window
        )

    def _verdict(self, loss: float, grad_norm: float | None, median: float) -> int:
        if not math.isfinite(loss):
            return NON_FINITE_LOSS
        if grad_norm is not None and not math.isfinite(grad_norm):
            return NON_FINITE_GRAD_NORM
        if self.divergence_bound is not None and loss > self.divergence_bound:
            return DIVERGENCE
        if not math.isnan(median) and loss > self.spike_factor * median:
            return SPIKE
        return OK

    def reason(self, code: int, loss: float, grad_norm: float | None, median: float) -> str:
        """The reason string of a verdict ``code`` (what :meth:`check` returns)."""
        if code == NON_FINITE_LOSS:
            return f"non-finite loss ({loss})"
        if code == NON_FINITE_GRAD_NORM:
            return f"non-finite grad norm ({grad_norm})"
        if code == DIVERGENCE:
            origin = f" = {self.bound_origin}" if self.bound_origin else ""
            return (
                f"divergence: loss {loss:.4g} > {self.divergence_bound:.4g}{origin} "
                "(trainer.divergence_factor)"
            )
        return (
            f"loss spike: {loss:.4g} > {self.spike_factor:g} x running median "
            f"{median:.4g} over {self.spike_window} steps"
        )

    def state_dict(self) -> dict[str, Any]:
        """The loss window and the bound, so a resumed run flags exactly what the original would."""
        return {"history": list(self.history), "divergence_bound": self.divergence_bound}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the loss window. The bound stays the one of the current config: it is a pure
        function of the config (same config, same bound), and a user who resumes with another
        ``trainer.divergence_factor`` after a crash means the new one."""
        self.history.clear()
        self.history.extend(float(x) for x in state["history"])


@dataclass(frozen=True)
class Crash:
    """The first flagged update the host learned of: its number, reason, loss and grad norm."""

    update: int
    reason: str
    loss: float
    grad_norm: float


class DeviceCrashGuard:
    """:class:`CrashGuard`'s rule on device tensors: no host sync per update.

    :meth:`observe` takes the update's loss and grad norm as device tensors and returns the
    *halted* flag (a float32 0-dim tensor, 1.0 once any update was flagged): it is sticky, so
    an optimizer that obeys it (``optimizer.found_inf``) skips the flagged update and every
    later one until the host reads the verdict (:meth:`host_read`) and handles the crash;
    the weights the host then sees are exactly those before the first flagged update. The
    loss window, the bound and the reason strings are the host guard's (``rules``), computed
    in float64 so both guards flag exactly the same updates.
    """

    _FIRST = 5  # update, code, loss, grad norm, median: the first flagged update's record

    def __init__(self, rules: CrashGuard, device: torch.device) -> None:
        self.rules = rules
        self.device = torch.device(device)
        self.window = max(rules.spike_window, 1)
        self._spike_on = rules.spike_window > 0 and rules.spike_factor > 0
        self._bound = rules.divergence_bound
        self._reset(list(rules.history))

    def _reset(self, history: list[float]) -> None:
        kept = history[-self.window :]
        hist = torch.zeros(self.window, dtype=torch.float64)
        hist[: len(kept)] = torch.tensor(kept, dtype=torch.float64)
        self._hist = hist.to(self.device)
        self._accepted = torch.tensor(len(kept), dtype=torch.int64).to(self.device)
        self._halted = torch.zeros((), dtype=torch.float32).to(self.device)
        self._first = torch.full((self._FIRST,), math.nan, dtype=torch.float64).to(self.device)

    @property
    def halted(self) -> Tensor:
        """1.0 (float32, on the device) once an update was flagged, else 0.0."""
        return self._halted

    def observe(self, loss: Tensor, grad_norm: Tensor, update: int) -> Tensor:
        """Judge update ``update`` on the device; returns the (sticky) halted flag."""
        loss = loss.detach().to(self.device, torch.float64).reshape(())
        norm = grad_norm.detach().to(self.device, torch.float64).reshape(())
        code = torch.where(
            ~torch.isfinite(loss),
            NON_FINITE_LOSS,
            torch.where(~torch.isfinite(norm), NON_FINITE_GRAD_NORM, OK),
        )
        if self._bound is not None:
            code = torch.where((code == OK) & (loss > self._bound), DIVERGENCE, code)
        if self._spike_on:
            ordered = self._hist.sort().values
            # statistics.median: the mean of the two middle values of an even window
            median = (ordered[(self.window - 1) // 2] + ordered[self.window // 2]) / 2
            armed = self._accepted >= self.window
            spike = armed & (loss > self.rules.spike_factor * median)
            code = torch.where((code == OK) & spike, SPIKE, code)
            median = torch.where(armed, median, math.nan)
        else:
            median = torch.full((), math.nan, dtype=torch.float64, device=self.device)
        bad = code != OK
        running = self._halted == 0
        record = torch.stack(
            [torch.full_like(loss, float(update)), code.to(torch.float64), loss, norm, median]
        )
        self._first = torch.where(bad & running, record, self._first)
        # the window of accepted losses (kept as the host guard's deque, also with spikes off)
        accept = ~bad & running
        pos = (self._accepted % self.window).reshape(1)
        kept = self._hist.index_select(0, pos)
        self._hist.index_copy_(0, pos, torch.where(accept, loss.reshape(1), kept))
        self._accepted += accept.to(torch.int64)
        self._halted = torch.maximum(self._halted, bad.to(torch.float32))
        return self._halted

    def host_read(self, *extra: Tensor) -> tuple[Crash | None, list[float]]:
        """(the first flagged update or None, ``extra`` scalars as floats): one host sync."""
        parts = [self._halted.to(torch.float64).reshape(1), self._first]
        parts += [t.detach().to(self.device, torch.float64).reshape(1) for t in extra]
        values = torch.cat(parts).tolist()
        halted, (update, code, loss, norm, median) = values[0], values[1 : 1 + self._FIRST]
        rest = values[1 + self._FIRST :]
        if not halted:
            return None, rest
        reason = self.rules.reason(int(code), loss, norm, median)
        return Crash(int(update), reason, loss, norm), rest

    def state_dict(self) -> dict[str, Any]:
        """:meth:`CrashGuard.state_dict`'s format (loss window oldest first): a host read."""
        hist, accepted = self._hist.tolist(), int(self._accepted)
        count = min(accepted, self.window)
        history = [hist[(accepted - count + i) % self.window] for i in range(count)]
        return {"history": history, "divergence_bound": self.rules.divergence_bound}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the loss window (as :meth:`CrashGuard.load_state_dict`) and clear the flag."""
        self._reset([float(x) for x in state["history"]])


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


class HostCrashGuard:
    """:class:`CrashGuard` behind :class:`DeviceCrashGuard`'s interface, for optimizers that
    cannot skip an update on the device: the host reads every update anyway, so the rule runs
    on host floats (a few µs) instead of ~140 small device ops (~0.4 ms on a CPU)."""

    def __init__(self, rules: CrashGuard) -> None:
        self.rules = rules
        self._pending: tuple[Tensor, Tensor, int] | None = None

    def observe(self, loss: Tensor, grad_norm: Tensor, update: int) -> None:
        """Remember update ``update``'s loss and grad norm for the next :meth:`host_read`."""
        self._pending = (loss, grad_norm, update)

    def host_read(self, *extra: Tensor) -> tuple[Crash | None, list[float]]:
        """(the observed update as a :class:`Crash` if flagged, else None; ``extra`` as floats)."""
        if self._pending is None:
            raise RuntimeError("HostCrashGuard.host_read before observe()")
        loss_t, norm_t, update = self._pending
        self._pending = None
        parts = [t.detach().float().reshape(1).cpu() for t in (loss_t, norm_t, *extra)]
        loss, norm, *rest = torch.cat(parts).tolist()
        reason = self.rules.check(loss, norm)
        return (None if reason is None else Crash(update, reason, loss, norm)), rest

    def state_dict(self) -> dict[str, Any]:
        """:meth:`CrashGuard.state_dict`."""
        return self.rules.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:meth:`CrashGuard.load_state_dict`."""
        self.rules.load_state_dict(state)
