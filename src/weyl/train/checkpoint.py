"""Atomic, resumable checkpoints: sharded model/optimizer state, trainer state, per-rank state.

Layout under ``<run_dir>/checkpoints`` (format 3)::

    step_00001000/
        __0_0.distcp      rank 0's shards of model and optimizer (torch.distributed.checkpoint)
        __1_0.distcp      rank 1's ...
        .metadata         DCP's index of the shards (written by rank 0 after every rank's shards)
        state.pt          step, trainer state, rank 0's data-stream position (world-size free)
        rank_00000.pt     rank 0's data-stream state and RNG states
        rank_00001.pt     ...
        manifest.json     written last: the commit marker

A checkpoint is written into ``.tmp-step_00001000/`` (same file system): every rank writes its
own model/optimizer shards with DCP (:mod:`weyl.train.sharded_state`: no gather onto rank 0,
the same format under DDP, FSDP2 and in one process, loadable at any world size) and its rank
file; rank 0 then writes ``state.pt`` and ``manifest.json`` (last), renames the directory and
fsyncs the parent. Readers ignore ``.tmp-*`` leftovers of a killed write, so the previous
checkpoint stays the newest loadable one; a write that fails (disk full) removes its ``.tmp-*``
directory.

**Asynchronous saves** (``trainer.checkpoint_async``): the trainer is blocked only while DCP
copies the shards into a CPU staging buffer; a background thread per rank writes them, gathers
every rank's file digests and rank 0 commits (state.pt, manifest, rename) as above, so the files
are the same as a synchronous save's. One save is in flight at a time: the next save, a resume,
a rollback and the end of the run wait for it first. A kill before the commit leaves the
previous checkpoint the newest.

**Self-verifying.** ``manifest.json`` holds the format, step, world size and, for every file,
its size and CRC-32 (zlib, ~1.2 GB/s): each rank sums its own files (rank file while it is
streamed out, shards after DCP wrote them) and rank 0 gathers them, so no rank reads another
rank's files. A checkpoint is *good* when every file listed has its recorded size and CRC and
``state.pt`` and this rank's file load with ``torch.load(weights_only=True)``; on resume each
rank checks ``state.pt``, ``.metadata``, its own rank file and every ``world_size``-th shard, so
together the ranks read the checkpoint once. Resuming with ``resume=auto`` takes the newest good
checkpoint: a damaged newer one (truncated, zeroed, a file deleted or overwritten) is skipped
with one warning line naming the file and why, and recorded in :attr:`CheckpointManager.skipped`
(the runner logs it to metrics.jsonl as a ``checkpoint_skipped`` event). When none is good,
:class:`CheckpointError` (a ValueError: one line, exit code 2) names each one and why. Pruning to
``keep_last`` counts only checkpoints that pass the cheap checks (manifest, sizes), so it never
deletes the last good one to keep a damaged newer one.

**Older formats load.** Format 2 (``state.pt`` holding full model and optimizer state dicts,
manifest with CRCs) and format 1 (no manifest) are read as before and their full state dicts
handed to ``set_*_state_dict`` (re-sharded under FSDP2); for format 1, "good" means the files
load and the rank file of the current world size exists.

Nothing is pickled code: ``state.pt`` and rank files load with ``torch.load(weights_only=True)``
and DCP's files through :mod:`weyl.train.sharded_state`'s weights-only reader.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import threading
import zlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from weyl.durable_files import TMP_PREFIX, fsync_dir, replace_durably, temp_path, write_durably
from weyl.train import fault_injection
from weyl.train.distributed import DistContext
from weyl.train.model_wrapping import is_fsdp, unwrap_model
from weyl.train.sharded_state import (
    METADATA,
    SHARD_SUFFIX,
    async_save_sharded_state,
    load_sharded_state,
    raise_storage_error,
    save_sharded_state,
    shard_files,
)

# 3: model/optimizer as DCP shards; 2: manifest.json with sizes and CRC-32s (written last),
# full state dicts in state.pt; 1: no manifest.
CHECKPOINT_FORMAT = 3
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")

log = logging.getLogger(__name__)


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
    unwrap_model(model).load_state_dict(model_sd)
    optimizer.load_state_dict(optim_sd)


# ---------------------------------------------------------------- files


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message is one line naming file and why."""


@dataclass(frozen=True)
class FileDigest:
    """Size and CRC-32 of one checkpoint file, as recorded in ``manifest.json``."""

    size: int
    crc32: int


@dataclass(frozen=True)
class SkippedCheckpoint:
    """A checkpoint ``resume=auto`` passed over, and why."""

    step: int
    path: Path
    reason: str


class _DigestingWriter:
    """A write-only file wrapper that sums the bytes it passes on (what torch.save needs)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.size = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()


def save_file_durably(obj: Any, path: Path) -> FileDigest:
    """``torch.save`` to ``path`` via a temp file in the same dir, fsync, rename, fsync dir."""
    holder: list[_DigestingWriter] = []

    def write(f: BinaryIO) -> None:
        holder.append(_DigestingWriter(f))
        torch.save(obj, holder[0])

    replace_durably(path, temp_path(path), write)
    return FileDigest(holder[0].size, holder[0].crc)


def file_digest(path: Path) -> FileDigest:
    """Size and CRC-32 of a file on disk (read in 1 MiB chunks)."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return FileDigest(size, crc)


def load_file(path: str | Path) -> Any:
    """Load one checkpoint file with ``weights_only=True`` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def step_dir_name(step: int) -> str:
    """Directory name of the checkpoint taken after ``step`` updates."""
    return f"step_{step:08d}"


def rank_file_name(rank: int) -> str:
    """File holding one rank's data and RNG state."""
    return f"rank_{rank:05d}.pt"


def read_manifest(path: Path) -> dict[str, Any] | None:
    """``manifest.json`` of checkpoint dir ``path``; None for a format-1 checkpoint (none there).

    Raises :class:`CheckpointError` when it exists but cannot be read.
    """
    file = path / MANIFEST
    if not file.exists():
        return None
    try:
        manifest = json.loads(file.read_text())
        files = manifest["files"]
        for entry in files.values():
            int(entry["size"]), int(entry["crc32"])
        return manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{file} is unreadable ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _sizes_match(path: Path) -> bool:
    """The cheap completeness check: a manifest whose files all exist with their sizes
    (format 1: state.pt exists)."""
    try:
        manifest = read_manifest(path)
    except CheckpointError:
        return False
    if manifest is None:
        return (path / "state.pt").is_file()
    try:
        return all((path / n).stat().st_size == e["size"] for n, e in manifest["files"].items())
    except OSError:
        return False


def verify_checkpoint(path: Path, world_size: int, rank: int) -> dict[str, Any] | None:
    """Check sizes and CRCs of ``state.pt``, this rank's file and (format 3) ``.metadata`` and
    this rank's share of the shard files against the manifest.

    Returns the manifest (None for format 1); raises :class:`CheckpointError` naming the file.
    """
    manifest = read_manifest(path)
    if manifest is None:
        return None
    files = manifest["files"]
    needed = ["state.pt"]
    if int(manifest.get("world_size", -1)) == world_size:
        needed.append(rank_file_name(rank))
    if METADATA in files:
        # Every rank checks every world_size-th shard: together they read each file once.
        shards = sorted(n for n in files if n.endswith(SHARD_SUFFIX))
        needed += [METADATA, *shards[rank::world_size]]
    for name in needed:
        file = path / name
        if name not in files:
            raise CheckpointError(f"{file} is not in its manifest")
        if not file.is_file():
            raise CheckpointError(f"{file} is missing")
        want = FileDigest(int(files[name]["size"]), int(files[name]["crc32"]))
        got = file_digest(file)
        if got.size != want.size:
            raise CheckpointError(f"{file} has {got.size} bytes, expected {want.size} (truncated?)")
        if got.crc32 != want.crc32:
            raise CheckpointError(f"{file} does not match its checksum (damaged)")
    return manifest


def has_sharded_state(path: str | Path) -> bool:
    """True for a format-3 checkpoint dir (model and optimizer in DCP shards)."""
    return (Path(path) / METADATA).is_file()


def _load_checked(file: Path) -> Any:
    try:
        return load_file(file)
    except Exception as err:  # a damaged zip, a pickle the weights_only loader rejects, ...
        raise CheckpointError(f"{file} cannot be loaded ({_first_line(err)})") from None


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """Checkpoint directories in ``ckpt_dir`` as (step, path), oldest first; temp dirs ignored.

    Lists every ``step_*`` dir holding a manifest or a state.pt, damaged or not; see
    :func:`latest_checkpoint` for the newest one that looks complete.
    """
    root = Path(ckpt_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        m = _STEP_DIR.match(entry.name)
        if m and entry.is_dir() and ((entry / "state.pt").is_file() or (entry / MANIFEST).exists()):
            found.append((int(m.group(1)), entry))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """Newest checkpoint whose files are all there with their recorded sizes, or None."""
    for _, path in reversed(list_checkpoints(ckpt_dir)):
        if _sizes_match(path):
            return path
    return None


@dataclass
class _PendingSave:
    """An asynchronous save whose shards are still being written (see :class:`CheckpointManager`)."""

    step: int
    future: Future
    thread: threading.Thread | None = None
    error: BaseException | None = None
    files: dict[str, FileDigest] = field(default_factory=dict)


class CheckpointManager:
    """Writes and finds checkpoints of one run; all ranks call :meth:`save` together.

    ``async_save``: :meth:`save` returns once DCP has staged the shards; the rest runs in a
    background thread (see the module docstring) and :meth:`wait` joins it.
    """

    def __init__(
        self, ckpt_dir: str | Path, ctx: DistContext, keep_last: int = 2, async_save: bool = False
    ) -> None:
        self.dir = Path(ckpt_dir)
        self.ctx = ctx
        self.keep_last = keep_last
        self.async_save = async_save
        # Checkpoints the last :meth:`load_newest_good` passed over, newest first.
        self.skipped: list[SkippedCheckpoint] = []
        self._preloaded: tuple[Path, dict[str, Any], dict[str, Any] | None] | None = None
        self._pending: _PendingSave | None = None
        self._async_group = None
        if async_save and ctx.is_distributed:
            import torch.distributed as dist

            # The background thread's collectives must not interleave with training's: they get
            # their own gloo group (DCP's async save needs a CPU backend anyway).
            self._async_group = dist.new_group(backend="gloo")

    def save(
        self,
        step: int,
        shared: dict[str, Any],
        rank_state: dict[str, Any],
        sharded: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``step``: ``shared`` from rank 0, ``rank_state`` from every rank and
        ``sharded`` (model/optimizer state dicts, :func:`weyl.train.sharded_state.sharded_state_dict`)
        as every rank's DCP shards. Asynchronous saves return before the files are complete."""
        self.wait()  # one save in flight at a time
        final = self.dir / step_dir_name(step)
        tmp = self.dir / f"{TMP_PREFIX}{final.name}"
        if self.ctx.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        self.ctx.barrier()
        try:
            name = rank_file_name(self.ctx.rank)
            own = {name: save_file_durably({**rank_state, "rank": self.ctx.rank}, tmp / name)}
            if sharded is not None and self.async_save:
                future = async_save_sharded_state(sharded, tmp, self._async_group)
                pending = _PendingSave(step, future, files=own)
                pending.thread = threading.Thread(
                    target=self._finish_in_background,
                    args=(pending, shared, tmp, final),
                    name=f"weyl-checkpoint-{step}",
                    daemon=True,
                )
                self._pending = pending
                pending.thread.start()
                return final
            if sharded is not None:
                save_sharded_state(sharded, tmp)
            self._commit(step, shared, tmp, final, own, sharded is not None, None)
        except BaseException:
            if self.ctx.is_main:  # a full disk must not also be left holding a partial copy
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.ctx.barrier()
        return final

    def _finish_in_background(
        self, pending: _PendingSave, shared: dict[str, Any], tmp: Path, final: Path
    ) -> None:
        try:
            try:
                pending.future.result()
            except BaseException as err:  # DCP wraps a failed write (and it is a BaseException)
                raise_storage_error(err, tmp, self.ctx.rank)
            self._commit(pending.step, shared, tmp, final, pending.files, True, self._async_group)
        except BaseException as err:
            pending.error = err
            if self.ctx.is_main:
                shutil.rmtree(tmp, ignore_errors=True)

    def wait(self) -> None:
        """Block until an asynchronous save in flight is committed (all ranks call it together);
        re-raises its failure. A no-op when none is."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.thread is not None:
            pending.thread.join()
        self.ctx.barrier()  # rank 0's commit is done before any rank goes on
        if pending.error is not None:
            raise pending.error

    def _commit(
        self,
        step: int,
        shared: dict[str, Any],
        tmp: Path,
        final: Path,
        own: dict[str, FileDigest],
        has_shards: bool,
        group: Any,
    ) -> None:
        """Every rank: digest its shards, gather all digests on rank 0; rank 0: finish."""
        files = dict(own)
        if has_shards:
            files.update({p.name: file_digest(p) for p in shard_files(tmp, self.ctx.rank)})
        gathered = [files]
        if self.ctx.is_distributed:
            import torch.distributed as dist

            gathered = [{} for _ in range(self.ctx.world_size)]
            dist.all_gather_object(gathered, files, group=group)
        if not self.ctx.is_main:
            return
        fault_injection.hooks.in_checkpoint_write(step)
        merged = {name: d for part in gathered for name, d in part.items()}
        if has_shards:
            merged[METADATA] = file_digest(tmp / METADATA)
        self._finish(step, shared, tmp, final, merged)

    def _finish(
        self,
        step: int,
        shared: dict[str, Any],
        tmp: Path,
        final: Path,
        files: dict[str, FileDigest],
    ) -> None:
        """Rank 0: state.pt, then the manifest (written last), rename, prune."""
        world = self.ctx.world_size
        files["state.pt"] = save_file_durably(
            {**shared, "format": CHECKPOINT_FORMAT, "step": step, "world_size": world},
            tmp / "state.pt",
        )
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "world_size": world,
            "files": {n: {"size": d.size, "crc32": d.crc32} for n, d in sorted(files.items())},
        }
        text = json.dumps(manifest, indent=1).encode()
        write_durably(tmp / MANIFEST, text)
        if final.exists():  # re-saving the same step after a rollback
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(self.dir)
        self._prune()

    def _prune(self) -> None:
        # Count only checkpoints that look complete, and delete nothing newer than the oldest
        # one kept: a damaged newer checkpoint never costs the last good one.
        if self.keep_last <= 0:
            return
        found = list_checkpoints(self.dir)
        kept = [step for step, path in reversed(found) if _sizes_match(path)][: self.keep_last]
        if len(kept) < self.keep_last:
            return
        for step, path in found:
            if step < kept[-1]:
                shutil.rmtree(path, ignore_errors=True)

    def latest(self) -> Path | None:
        """Newest checkpoint of this run that looks complete (see :func:`latest_checkpoint`)."""
        self.wait()
        return latest_checkpoint(self.dir)

    def _read(self, path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Verify and load (shared, own) of checkpoint ``path``; CheckpointError when damaged."""
        manifest = verify_checkpoint(path, self.ctx.world_size, self.ctx.rank)
        shared = _load_checked(path / "state.pt")
        if not isinstance(shared, dict) or "step" not in shared:
            raise CheckpointError(f"{path / 'state.pt'} holds no checkpoint (no step)")
        saved_world = (manifest or shared).get("world_size")
        if saved_world != self.ctx.world_size:
            # Data-stream positions are per rank: they only mean something at the same world size.
            return shared, None
        rank_path = path / rank_file_name(self.ctx.rank)
        if not rank_path.is_file():
            raise CheckpointError(
                f"{rank_path} is missing (the checkpoint was written by {saved_world} ranks)"
            )
        return shared, _load_checked(rank_path)

    def load(self, path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(shared state, this rank's state or None when saved at another world size).

        Raises :class:`CheckpointError` (one line) when ``path`` is damaged or incomplete.
        """
        self.wait()
        path = Path(path)
        if self._preloaded is not None and self._preloaded[0] == path:
            _, shared, own = self._preloaded
            self._preloaded = None
            return shared, own
        if not (path / "state.pt").is_file() and not (path / MANIFEST).exists():
            raise ValueError(
                f"trainer.resume={str(path)!r} is not a checkpoint directory (no state.pt); "
                "point it at <run_dir>/checkpoints/step_XXXXXXXX or use resume=auto"
            )
        return self._read(path)

    def load_newest_good(self) -> Path | None:
        """Find the newest checkpoint every rank can verify and load (None when there is none).

        Damaged newer ones are skipped with one warning each and kept in :attr:`skipped`; the
        loaded state is handed out by the next :meth:`load` of the returned path. Raises
        :class:`CheckpointError` when checkpoints exist but none is good.
        """
        self.wait()
        self.skipped = []
        candidates = list_checkpoints(self.dir)
        for step, path in reversed(candidates):
            try:
                shared, own = self._read(path)
                reason = None
            except CheckpointError as err:
                reason = str(err)
            # Every rank must resume from the same checkpoint: one rank's failure skips it.
            failures = self.ctx.all_reduce_sum(
                torch.tensor([0.0 if reason is None else 1.0], device=self.ctx.device)
            )
            if reason is None and float(failures.item()) > 0:
                reason = f"{path} failed verification on another rank"
            if reason is None:
                self._preloaded = (path, shared, own)
                return path
            if self.ctx.is_main:
                log.warning("checkpoint %s skipped: %s; trying the next older one", path, reason)
            self.skipped.append(SkippedCheckpoint(step, path, reason))
        if self.skipped:
            details = "; ".join(s.reason for s in self.skipped)
            raise CheckpointError(
                f"no intact checkpoint to resume from in {self.dir}: {details}; the files are "
                "kept as they are; to start over choose another run_dir=..."
            )
        return None

    def load_sharded(self, path: str | Path, model: nn.Module, optimizer: Optimizer) -> None:
        """Load format-3 checkpoint ``path``'s model and optimizer shards in place, resharded to
        this run's layout (a collective: all ranks call it)."""
        load_sharded_state(path, model, optimizer)
