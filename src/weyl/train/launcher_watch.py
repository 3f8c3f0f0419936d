"""Stop a worker whose launcher died: torchrun starts workers in their own session, so a
``kill -9`` of torchrun's process group leaves them training on, writing the run directory
that a relaunch is about to use.

A daemon thread polls ``os.getppid()``: when the launcher dies the worker is re-parented,
and the thread sends the worker SIGTERM — the trainer's preemption path, which agrees with
the other ranks on a step, checkpoints and exits — then SIGKILL after a grace period, since a
collective with a dead peer can block far longer. Polling is used rather than
``prctl(PR_SET_PDEATHSIG)``, which fires when the parent *thread* that forked the worker ends,
not the parent process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

POLL_S = 0.2
# The preemption checkpoint of a big model takes tens of seconds; a rank stuck in a
# collective with a dead peer never gets there, so the grace is the bound on both.
GRACE_S = 60.0

_watcher: threading.Thread | None = None
_dead_launcher: int | None = None  # set before the SIGTERM, so the trainer can tell it apart


def _watch(parent: int, grace_s: float) -> None:
    global _dead_launcher
    stop = threading.Event()  # only ever waited on: an interruptible sleep
    while os.getppid() == parent:
        stop.wait(POLL_S)
    _dead_launcher = parent
    log.error(
        "launcher (pid %d) is gone: stopping this worker (SIGTERM now, SIGKILL in %.0f s)",
        parent,
        grace_s,
    )
    os.kill(os.getpid(), signal.SIGTERM)
    stop.wait(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)


def dead_launcher() -> int | None:
    """The pid of this worker's launcher once the watch saw it die (its SIGTERM is not a
    preemption: whoever killed the launcher meant the job to stop, so it is not requeued)."""
    return _dead_launcher


def watch_launcher(grace_s: float = GRACE_S) -> bool:
    """Start (once per process) the thread that stops this worker when its parent dies.

    Returns True when a watcher runs. Call it only in a process that a launcher started
    (torchrun, a multi-process job): a single run under ``nohup`` outlives its shell on purpose.
    """
    global _watcher
    if _watcher is not None and _watcher.is_alive():
        return True
    parent = os.getppid()
    if parent <= 1:  # already orphaned, or started by init: there is no launcher to watch
        return False
    _watcher = threading.Thread(
        target=_watch, args=(parent, grace_s), name="weyl-launcher-watch", daemon=True
    )
    _watcher.start()
    return True
