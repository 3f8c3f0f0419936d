"""Atomic, resumable checkpoints: model, optimizer, trainer state, and per-rank data/RNG state.

Layout under ``<run_dir>/checkpoints``::

    step_00001000/
        state.pt          model, optimizer (AdamW² vectors included), step, trainer state
        rank_00000.pt     rank 0's data-stream state and RNG states
        rank_00001.pt     ...

A checkpoint is written into ``.tmp-step_00001000/`` (same file system), every file is fsynced,
then rank 0 renames the directory and fsyncs the parent. A directory named ``step_*`` is
therefore always complete; readers ignore ``.tmp-*`` leftovers of a killed write, so the
previous checkpoint stays the newest loadable one. Under DDP every rank writes its own rank
file into the temporary directory before rank 0's rename (barriers order the steps).

Under FSDP2 we gather *full* state dicts (``get_model_state_dict`` / ``get_optimizer_state_dict``
with ``full_state_dict=True, cpu_offload=True``) and rank 0 writes them in the same format;
loading hands the full dicts to ``set_*_state_dict``, which re-shards them. This keeps one
checkpoint format and is fine up to models that fit in host memory (all of the paper's);
sharded DCP checkpoints would be the next step for larger ones.

Everything is stored as tensors or plain containers so loading works with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from weyl.durable_files import fsync_dir, replace_durably
from weyl.train import fault_injection
from weyl.train.distributed import DistContext, is_fsdp

CHECKPOINT_FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")
TMP_PREFIX = ".tmp-"


# ---------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every RNG the training step may touch, as weights_only-loadable values."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    # random.setstate needs tuples all the way down; keep it robust to list round-trips.
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


# ---------------------------------------------------------------- model / optimizer state


def model_optimizer_state(model: nn.Module, optimizer: Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts in the checkpoint format; a collective under FSDP2."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (
            get_model_state_dict(model, options=opts),
            get_optimizer_state_dict(model, optimizer, options=opts),
        )
    from weyl.models.attention_view import unwrap_model

    return unwrap_model(model).state_dict(), optimizer.state_dict()


def load_model_optimizer_state(
    model: nn.Module, optimizer: Optimizer, model_sd: dict, optim_sd: dict
) -> None:
    """Inverse of :func:`model_optimizer_state` (re-shards under FSDP2)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_sd, options=opts)
        set_optimizer_state_dict(model, optimizer, optim_sd, options=opts)
        return
    from weyl.models.attention_view import unwrap_model

    unwrap_model(model).load_state_dict(model_sd)
    optimizer.load_state_dict(optim_sd)


# ---------------------------------------------------------------- files


def save_file_durably(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` via a temp file in the same dir, fsync, rename, fsync dir."""
    replace_durably(path, path.with_name(f"{TMP_PREFIX}{path.name}"), lambda f: torch.save(obj, f))


def load_file(path: str | Path) -> Any:
    """Load one checkpoint file with ``weights_only=True`` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def step_dir_name(step: int) -> str:
    """Directory name of the checkpoint taken after ``step`` updates."""
    return f"step_{step:08d}"


def rank_file_name(rank: int) -> str:
    """File holding one rank's data and RNG state."""
    return f"rank_{rank:05d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``ckpt_dir`` as (step, path), oldest first; temp dirs ignored."""
    root = Path(ckpt_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        m = _STEP_DIR.match(entry.name)
        if m and entry.is_dir() and (entry / "state.pt").is_file():
            found.append((int(m.group(1)), entry))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """Newest complete checkpoint directory, or None."""
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


class CheckpointManager:
    """Writes and finds checkpoints of one run; all ranks call :meth:`save` together."""

    def __init__(self, ckpt_dir: str | Path, ctx: DistContext, keep_last: int = 2) -> None:
        self.dir = Path(ckpt_dir)
        self.ctx = ctx
        self.keep_last = keep_last

    def save(self, step: int, shared: dict[str, Any], rank_state: dict[str, Any]) -> Path:
        """Write checkpoint ``step``: ``shared`` from rank 0, ``rank_state`` from every rank."""
        final = self.dir / step_dir_name(step)
        tmp = self.dir / f"{TMP_PREFIX}{final.name}"
        if self.ctx.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        self.ctx.barrier()
        save_file_durably(
            {**rank_state, "rank": self.ctx.rank}, tmp / rank_file_name(self.ctx.rank)
        )
        self.ctx.barrier()
        if self.ctx.is_main:
            fault_injection.maybe_kill_in_checkpoint(step)
            save_file_durably(
                {
                    **shared,
                    "format": CHECKPOINT_FORMAT,
                    "step": step,
                    "world_size": self.ctx.world_size,
                },
                tmp / "state.pt",
            )
            if final.exists():  # re-saving the same step after a rollback
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(self.dir)
            self._prune()
        self.ctx.barrier()
        return final

    def _prune(self) -> None:
        if self.keep_last > 0:
            for _, path in list_checkpoints(self.dir)[: -self.keep_last]:
                shutil.rmtree(path, ignore_errors=True)

    def latest(self) -> Path | None:
        """Newest complete checkpoint of this run."""
        return latest_checkpoint(self.dir)

    def load(self, path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(shared state, this rank's state or None when the checkpoint has no file for it)."""
        path = Path(path)
        if not (path / "state.pt").is_file():
            raise ValueError(
                f"trainer.resume={str(path)!r} is not a checkpoint directory (no state.pt); "
                "point it at <run_dir>/checkpoints/step_XXXXXXXX or use resume=auto"
            )
        shared = load_file(path / "state.pt")
        rank_path = path / rank_file_name(self.ctx.rank)
        own = load_file(rank_path) if rank_path.is_file() else None
        if shared.get("world_size") != self.ctx.world_size:
            # Data-stream positions are per rank: they only mean something at the same world size.
            own = None
        return shared, own
