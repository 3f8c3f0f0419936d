"""What ``weyl train`` (and ``weyl demo``) exit with, one code per outcome.

Schedulers and sweep tools read these: a run that diverged is a result but not a success, so it
exits non-zero; a preempted run exits 3 so a wrapper can tell "requeue me" from "broken".
"""

from __future__ import annotations

FINISHED = 0
ERROR = 1  # an unexpected error or an I/O failure (disk full, permission denied)
BAD_INPUT = 2  # a config, override, path or data set that cannot run; nothing was trained
PREEMPTED = 3  # stopped by a preemption signal after checkpointing; resume continues it
CRASHED = 4  # the crash guard stopped a diverging run (status.json says why)
INTERRUPTED = 130  # Ctrl-C: checkpointed at the next step boundary (128 + SIGINT)

# A sweep exits with the most serious of its jobs' codes, in this order: the user stopped it,
# something broke, something could not start, a run diverged, a run was preempted, all finished.
SEVERITY = (INTERRUPTED, ERROR, BAD_INPUT, CRASHED, PREEMPTED, FINISHED)


def worst_exit_code(codes: list[int]) -> int:
    """The most serious of ``codes`` by :data:`SEVERITY` (unknown codes count as ERROR); 0 if none."""
    ranked = [code if code in SEVERITY else ERROR for code in codes]
    return min(ranked, key=SEVERITY.index, default=FINISHED)
