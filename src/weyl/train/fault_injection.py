"""TEST-ONLY fault injection, driven by environment variables. Never set these in real runs.

- ``WEYL_TEST_INJECT_NAN_AT_STEP=N``: the loss of update ``N`` (1-based, the update that would
  produce step ``N``) becomes NaN, once per process.
- ``WEYL_TEST_KILL_AT_STEP=N``: the process SIGKILLs itself right after step ``N`` is complete
  (after its checkpoint, if one is due), like a node dying.
- ``WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP=N``: SIGKILL in the middle of writing the checkpoint of
  step ``N`` (after the model/optimizer shards and the per-rank files, before state.pt, the
  manifest and the rename; in the background thread of an asynchronous save).
- ``WEYL_TEST_STEP_SLEEP=S``: sleep ``S`` seconds per step, so a test can signal a running job.
- ``WEYL_TEST_SETUP_SLEEP=S``: sleep ``S`` seconds at the end of set-up, before the loop (a
  test signals the run there to exercise a Ctrl-C during set-up).
- ``WEYL_TEST_RAISE_AT_STEP=N``: raise a RuntimeError after step ``N`` (an unexpected error).

The one seam: production code calls the methods of :data:`hooks`, a :class:`NoFaults` whose
methods do nothing. :func:`install_from_env` (called once when a run starts) reads the variables
above once and, only when one is set, replaces it by an :class:`EnvFaults`; so a real run pays
no environment lookups or comparisons per step, only a call to an empty method.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

_PREFIX = "WEYL_TEST_"
_NAMES = (
    "INJECT_NAN_AT_STEP",
    "KILL_AT_STEP",
    "KILL_IN_CHECKPOINT_AT_STEP",
    "RAISE_AT_STEP",
    "STEP_SLEEP",
    "SETUP_SLEEP",
)


class NoFaults:
    """The points where a test may inject a fault; here every one does nothing."""

    def replace_loss_with_nan(self, update: int) -> bool:
        """True when the loss of update ``update`` (1-based) must become NaN."""
        return False

    def after_setup(self) -> None:
        """At the end of set-up, before the training loop."""

    def after_update(self) -> None:
        """Right after an optimizer step, before logging and checkpointing."""

    def after_step(self, step: int) -> None:
        """After step ``step`` is complete (logged, checkpointed if due)."""

    def in_checkpoint_write(self, step: int) -> None:
        """Rank 0, mid-write of checkpoint ``step`` (shards and rank files written, no state.pt)."""


class EnvFaults(NoFaults):
    """The faults the ``WEYL_TEST_*`` variables ask for (see the module docstring)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        def number(name: str, kind: type) -> float | int | None:
            value = env.get(_PREFIX + name)
            return kind(value) if value not in (None, "") else None

        self.nan_at = number("INJECT_NAN_AT_STEP", int)
        self.kill_at = number("KILL_AT_STEP", int)
        self.kill_in_checkpoint_at = number("KILL_IN_CHECKPOINT_AT_STEP", int)
        self.raise_at = number("RAISE_AT_STEP", int)
        self.step_sleep = number("STEP_SLEEP", float)
        self.setup_sleep = number("SETUP_SLEEP", float)
        self._nan_consumed = False

    def replace_loss_with_nan(self, update: int) -> bool:
        """True once, for update ``WEYL_TEST_INJECT_NAN_AT_STEP``."""
        if self._nan_consumed or update != self.nan_at:
            return False
        self._nan_consumed = True
        return True

    def after_setup(self) -> None:
        """Sleep ``WEYL_TEST_SETUP_SLEEP`` seconds."""
        if self.setup_sleep:
            time.sleep(self.setup_sleep)

    def after_update(self) -> None:
        """Sleep ``WEYL_TEST_STEP_SLEEP`` seconds."""
        if self.step_sleep:
            time.sleep(self.step_sleep)

    def after_step(self, step: int) -> None:
        """SIGKILL at ``WEYL_TEST_KILL_AT_STEP``; raise at ``WEYL_TEST_RAISE_AT_STEP``."""
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == self.raise_at:
            raise RuntimeError(f"injected fault after step {step}")

    def in_checkpoint_write(self, step: int) -> None:
        """SIGKILL at ``WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP``."""
        if step == self.kill_in_checkpoint_at:
            os.kill(os.getpid(), signal.SIGKILL)


hooks: NoFaults = NoFaults()


def install_from_env(env: Mapping[str, str] | None = None) -> None:
    """Read the ``WEYL_TEST_*`` variables once; install :class:`EnvFaults` if any is set.

    Faults already installed stay (the NaN fires once per process, across rollbacks and
    in-process runs) until :func:`reset`.
    """
    global hooks
    env = os.environ if env is None else env
    if type(hooks) is NoFaults and any(env.get(_PREFIX + name) for name in _NAMES):
        hooks = EnvFaults(env)


def reset() -> None:
    """Back to no faults; the next :func:`install_from_env` reads the environment again."""
    global hooks
    hooks = NoFaults()
