"""Stop requests: SIGUSR1/SIGUSR2/SIGTERM (preemption) and SIGINT (Ctrl-C) set a flag; the
trainer acts at the next step boundary.

The handler only sets a flag (anything more is unsafe inside a signal handler). The trainer
folds the flag into the per-step all-reduce, so every rank sees "some rank was signalled" at
the same step and checkpoints. A preemption marks the run ``preempted`` and exits with
:data:`PREEMPTED_EXIT_CODE` (under Slurm, rank 0 then asks Slurm to requeue the job); a Ctrl-C
marks it ``interrupted`` and exits 130. A second Ctrl-C raises KeyboardInterrupt at once (the
user wants out now; the newest checkpoint stays as it was).

Under torchrun a terminal's Ctrl-C reaches each worker twice: once from the terminal (the
whole foreground process group) and once forwarded by torchrun's agent a few milliseconds
later. So under torchrun a second SIGINT counts only after :data:`TORCHRUN_SIGINT_ECHO_S`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from types import FrameType

from weyl.train.exit_codes import PREEMPTED as PREEMPTED_EXIT_CODE  # noqa: F401 - re-exported

PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
TORCHRUN_SIGINT_ECHO_S = 2.0  # torchrun re-sends the terminal's SIGINT to its workers

log = logging.getLogger(__name__)


def under_torchrun() -> bool:
    """True in a worker started by torchrun (torch.distributed.elastic)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


class PreemptionFlag:
    """Installs handlers for :data:`PREEMPTION_SIGNALS` and SIGINT; remembers the first stop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.interrupted_at: float | None = None  # monotonic time of the first SIGINT
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once any preemption signal or Ctrl-C arrived."""
        return self.signum is not None or self.interrupted_at is not None

    @property
    def stop_kind(self) -> str | None:
        """``"interrupt"`` after a Ctrl-C, ``"preempt"`` after a preemption signal, else None."""
        if self.interrupted_at is not None:
            return "interrupt"
        return "preempt" if self.signum is not None else None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def _handle_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.interrupted_at is None:
            self.interrupted_at = now
            return
        if under_torchrun() and now - self.interrupted_at < TORCHRUN_SIGINT_ECHO_S:
            return  # torchrun forwarding the same Ctrl-C
        raise KeyboardInterrupt("second Ctrl-C")

    def install(self) -> PreemptionFlag:
        """Install the handlers (main thread only); returns self."""
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle_sigint)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


def slurm_job_id() -> str | None:
    """The Slurm job to requeue (the array task's own id when in an array), or None."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    array_task = os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_slurm_job(job_id: str | None = None, timeout_s: float = 30.0) -> bool:
    """``scontrol requeue`` this job and ask Slurm to start it again at once; True on success.

    Slurm holds a requeued job back (``Reason=BeginTime``) until its credential has expired
    (``AuthInfo=cred_expire``, default 120 s). ``StartTime=now`` lifts that when the job has
    already left its allocation; called from inside the running job, as the trainer does,
    Slurm sets the hold again when the job actually leaves, so there the delay stays
    ``cred_expire`` plus one scheduler pass (measured: ~6 s with cred_expire=5 on
    slurm/local-cluster.sh, ~2 min with Slurm's defaults).
    """
    job_id = job_id or slurm_job_id()
    if job_id is None:
        return False
    try:
        subprocess.run(
            ["scontrol", "requeue", job_id],
            check=True,
            timeout=timeout_s,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.SubprocessError) as err:
        log.error("scontrol requeue %s failed: %s", job_id, err)
        return False
    try:
        subprocess.run(
            ["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
            check=True,
            timeout=timeout_s,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("job %s requeued but StartTime=now failed: %s", job_id, err)
    return True
