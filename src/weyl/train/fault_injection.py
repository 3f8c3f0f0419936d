"""TEST-ONLY fault injection, driven by environment variables. Never set these in real runs.

- ``WEYL_TEST_INJECT_NAN_AT_STEP=N``: the loss of update ``N`` (1-based, the update that would
  produce step ``N``) becomes NaN, once per process.
- ``WEYL_TEST_KILL_AT_STEP=N``: the process SIGKILLs itself right after step ``N`` is complete
  (after its checkpoint, if one is due), like a node dying.
- ``WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP=N``: SIGKILL in the middle of writing the checkpoint of
  step ``N`` (after the per-rank files, before the model/optimizer file and the rename).
- ``WEYL_TEST_STEP_SLEEP=S``: sleep ``S`` seconds per step, so a test can signal a running job.
- ``WEYL_TEST_SETUP_SLEEP=S``: sleep ``S`` seconds at the end of set-up, before the loop (a
  test signals the run there to exercise a Ctrl-C during set-up).
- ``WEYL_TEST_RAISE_AT_STEP=N``: raise a RuntimeError after step ``N`` (an unexpected error).
"""

from __future__ import annotations

import os
import signal
import time

_nan_consumed = False


def _env_step(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def inject_nan(step: int) -> bool:
    """True (once) when the loss of update ``step`` must be replaced by NaN."""
    global _nan_consumed
    if _nan_consumed or _env_step("WEYL_TEST_INJECT_NAN_AT_STEP") != step:
        return False
    _nan_consumed = True
    return True


def reset() -> None:
    """Re-arm the once-per-process NaN injection (for tests running several runs in-process)."""
    global _nan_consumed
    _nan_consumed = False


def maybe_kill_after_step(step: int) -> None:
    """SIGKILL this process when ``WEYL_TEST_KILL_AT_STEP`` equals ``step``."""
    if _env_step("WEYL_TEST_KILL_AT_STEP") == step:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_kill_in_checkpoint(step: int) -> None:
    """SIGKILL this process mid-write when ``WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP`` equals ``step``."""
    if _env_step("WEYL_TEST_KILL_IN_CHECKPOINT_AT_STEP") == step:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_sleep() -> None:
    """Slow each step down by ``WEYL_TEST_STEP_SLEEP`` seconds."""
    delay = os.environ.get("WEYL_TEST_STEP_SLEEP")
    if delay:
        time.sleep(float(delay))


def maybe_sleep_in_setup() -> None:
    """Pause at the end of set-up by ``WEYL_TEST_SETUP_SLEEP`` seconds."""
    delay = os.environ.get("WEYL_TEST_SETUP_SLEEP")
    if delay:
        time.sleep(float(delay))


def maybe_raise_after_step(step: int) -> None:
    """Raise a RuntimeError when ``WEYL_TEST_RAISE_AT_STEP`` equals ``step``."""
    if _env_step("WEYL_TEST_RAISE_AT_STEP") == step:
        raise RuntimeError(f"injected fault after step {step}")
