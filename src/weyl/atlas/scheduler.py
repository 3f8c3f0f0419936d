"""Run the atlas's grid as ``weyl`` processes: locally one ``weyl train`` per run, on a cluster one
``weyl train -m`` (Hydra multirun) per method.

**Locally** (:func:`run_local`) each run is one ``python -m weyl.cli train <overrides>`` process
with one thread (``OMP_NUM_THREADS=1``), at most ``jobs`` at a time (default: the number of
cores), the widest runs first. Why processes of ``weyl train`` rather than Hydra multirun with
``hydra-joblib-launcher`` (which installs, and pairs with hydra-core 1.3):

- a grid point is a bundle of overrides (a method is an optimizer *and* a model or loss switch),
  which Hydra's sweeper can only cross, not zip: one multirun per method would leave cores idle
  at the end of each method's sweep, while one pool keeps every core busy to the end;
- a finished run is skipped point by point, before anything starts (a multirun would relaunch
  it, and only the resume would find there is nothing to do);
- each run is isolated: a run that crashes, runs out of memory or is killed is a result of its
  own, never the atlas's failure; a run's process is the same ``weyl train`` a user types, so
  resume, locking and exit codes are the trainer's own;
- no new dependency.
The price is one interpreter start per run (measured in the report of issue 18).

Killing the atlas: its runs get SIGTERM (the trainer checkpoints and exits 3; a SIGKILLed atlas
still reaches them, through ``PR_SET_PDEATHSIG``) and rerunning the same command continues: a
finished or crashed run is kept as is, any other restarts through ``trainer.resume=auto``
(from its newest checkpoint, bit for bit; from step 0 when it had none).

**On a cluster** (chosen by any ``hydra/launcher=...`` or ``hydra.launcher.*``
override, e.g. ``hydra/launcher=slurm``) each method is one ``weyl train -m`` over its LRs ×
widths × seeds, writing into the same run folders (``hydra.sweep.subdir=${name}``); the methods'
sweeps are submitted side by side (``jobs`` at a time), so the whole grid is queued at once.
A method whose every run is done is not submitted again.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from weyl.train.exit_codes import BAD_INPUT, INTERRUPTED, PREEMPTED

_PR_SET_PDEATHSIG = 1


@dataclass
class Job:
    """One process to run: its name, ``weyl`` arguments and log file."""

    name: str
    args: list[str]
    log: Path


class AtlasStopped(Exception):
    """The atlas was asked to stop (Ctrl-C, SIGTERM) or a run refused its config (exit 2)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def one_thread_env() -> dict[str, str]:
    """The environment of a run: one thread per run (the pool provides the parallelism)."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = "1"
    return env


def _die_with_parent() -> None:  # runs in the child, before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: a SIGKILLed atlas leaves its runs going (they still finish)


def _start(job: Job, env: dict[str, str]) -> subprocess.Popen:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with job.log.open("ab") as log:
        return subprocess.Popen(  # the caller's process group: a terminal's Ctrl-C reaches it
            [sys.executable, "-m", "weyl.cli", *job.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )


def last_line(log: Path) -> str:
    """The last non-empty line of a run's log (its one-line error, when it failed)."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def run_pool(
    jobs: Sequence[Job],
    workers: int,
    on_exit: Callable[[Job, int, float], None],
    env: dict[str, str] | None = None,
) -> dict[str, int]:
    """Run ``jobs`` as ``weyl`` processes, ``workers`` at a time; returns name → exit code.

    ``on_exit(job, code, seconds)`` reports each one as it ends. Exit 0 (finished), 4 (crashed)
    and 1 (failed) are results; 2 (the run refused its config) stops the atlas, as do Ctrl-C
    and SIGTERM (the runs checkpoint first): :class:`AtlasStopped`.
    """
    env = env or one_thread_env()
    pending = list(jobs)
    running: dict[str, tuple[Job, subprocess.Popen, float]] = {}
    codes: dict[str, int] = {}
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # a scheduler's or kill's SIGTERM: stop as a preemption
        raise AtlasStopped(PREEMPTED, "SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                running[job.name] = (job, _start(job, env), time.time())
            time.sleep(0.2)
            for name, (job, proc, t0) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[name]
                codes[name] = code
                on_exit(job, code, time.time() - t0)
                if code == BAD_INPUT:
                    raise AtlasStopped(BAD_INPUT, last_line(job.log) or f"{name}: bad config")
                if code in (INTERRUPTED, PREEMPTED) or code < 0:
                    raise AtlasStopped(code if code > 0 else INTERRUPTED, f"{name} was stopped")
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reached the runs too; a second SIGINT would abort them without a
        # checkpoint, SIGTERM only asks again for the same clean stop.
        _stop_all(running, signal.SIGTERM)
        raise AtlasStopped(INTERRUPTED, "interrupted (Ctrl-C)") from None
    except AtlasStopped:
        _stop_all(running, signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return codes


def _stop_all(running: dict, sig: int, grace_s: float = 120.0) -> None:
    """Ask every running run to stop (it checkpoints at its next step), then wait for it."""
    for _, proc, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(sig)
    deadline = time.time() + grace_s
    for _, proc, _ in running.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


def uses_hydra_launcher(overrides: Sequence[str]) -> bool:
    """True when the user picked a Hydra launcher (``hydra/launcher=slurm``, ...)."""
    return any(o.startswith(("hydra/launcher=", "hydra.launcher.")) for o in overrides)


def is_done(status: dict | None) -> bool:
    """A run that needs no more training: finished, or crashed (a result, counted as ℓ₀)."""
    return bool(status) and status.get("state") in ("finished", "crashed")
