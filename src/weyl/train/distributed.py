"""Process-group setup from torchrun/Slurm env vars; wrapping the model is
:mod:`weyl.train.model_wrapping`.

A single process (no ``WORLD_SIZE`` > 1 in the environment) runs without a process group, so
the same code path serves a laptop, torchrun on N GPUs and Slurm on N nodes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from weyl.train.launcher_watch import watch_launcher


@dataclass
class DistContext:
    """Where this process sits: rank, world size, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # noqa: RUF009 - immutable default
    # True when init_distributed created the process group (and so may destroy it).
    owns_group: bool = False

    @property
    def is_distributed(self) -> bool:
        """True when a process group is up (world size > 1)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and talks to wandb."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (no-op in a single process); returns ``t``."""
        if self.is_distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def resolve_device(preference: str, local_rank: int) -> torch.device:
    """``auto`` → this rank's CUDA device when there is one, else CPU."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"trainer.device={preference!r} but CUDA is not available; use auto or cpu"
            )
        return (
            torch.device("cuda", local_rank) if preference == "cuda" else torch.device(preference)
        )
    raise ValueError(f"trainer.device={preference!r} is unknown; use auto, cpu or cuda")


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the process group described by torchrun env vars, or run as a single process.

    A worker that a launcher started (world size > 1, or torchrun at all) also stops when
    that launcher dies (:func:`weyl.train.launcher_watch.watch_launcher`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        watch_launcher()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        owns = True
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=device, owns_group=owns
    )


def shutdown_distributed(ctx: DistContext) -> None:
    """Tear down the process group if :func:`init_distributed` created it (not a caller's)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def gloo_threads_alive() -> bool:
    """True while gloo's worker threads run in this process (read from ``/proc``; Linux only)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return False
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text())
        except OSError:  # the thread ended while we looked
            continue
    return any(n.startswith(("pt_gloo", "gloo_")) for n in names)


def exit_launched_worker(code: int) -> None:
    """End a launcher-started worker now with ``code`` when gloo's threads outlive its group.

    DDP keeps its gloo process group, and so gloo's worker threads, alive after
    ``destroy_process_group``. A worker thread that drops the last reference to a tensor
    Python also referenced takes the GIL; once the interpreter is finalizing that kills the
    thread inside a ``noexcept`` destructor: ``terminate called without an active
    exception``, SIGABRT, after a run that succeeded (it happens when the thread runs late,
    on a busy machine). So such a worker flushes its output and leaves without finalizing.
    Returns (the normal exit follows) in a single process or when no gloo thread is left.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if not (launched and gloo_threads_alive()):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # a closed or broken pipe must not change the exit code
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
