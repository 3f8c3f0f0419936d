"""Model and optimizer state through ``torch.distributed.checkpoint`` (DCP), loaded weights-only.

Every rank writes its own shards (``__<rank>_<i>.distcp``) and DCP's coordinator writes
``.metadata`` after all of them; there is no gather onto one rank. The state dicts come from
``get_model_state_dict`` / ``get_optimizer_state_dict`` with their default (sharded) options, so
they are keyed by parameter name (FQN) and hold DTensor shards under FSDP2 and plain tensors
under DDP or in a single process: one format for all three, and a load reshards to whatever
layout and world size the loading run has. AdamW²'s power-iteration vectors are plain tensors
of the logical matrix's column count, identical on every rank: DCP writes one copy and every
rank of any world size reads it whole.

Weights-only: tensors are read by DCP itself with ``torch.load(weights_only=True)``; the few
non-tensor values (optimizer hyper-parameters) go through :class:`WeightsOnlyLoadPlanner`
(DCP's default planner unpickles them without restrictions), and ``.metadata`` through
:class:`SafeFileSystemReader`, an unpickler that accepts only DCP's own metadata classes,
``torch.Size``, dtypes and paths: a checkpoint that asks for anything else is refused, not run.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from weyl.durable_files import os_error_in, with_filename
from weyl.train.model_wrapping import unwrap_model

METADATA = ".metadata"
SHARD_SUFFIX = ".distcp"

# What a DCP .metadata pickle may name: (module, name), or (module, "*") for any class defined
# in that module (DCP's metadata dataclasses and enums).
_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", "*"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that would run pickled code to load; one line naming file and global."""


class ShardedLoadError(ValueError):
    """DCP could not load a checkpoint's shards; one line naming the dir and the first cause."""


def _first_failure(err: BaseException) -> str:
    """``Type: first line`` of the first rank's failure inside DCP's CheckpointException."""
    failures = getattr(err, "failures", None) or {}
    for _, wrapped in sorted(failures.items()):
        inner = wrapped[0] if isinstance(wrapped, tuple) else wrapped
        if isinstance(inner, BaseException):
            err = inner
            break
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _dcp_load(path: str | Path, **kwargs: Any) -> None:
    """Run a DCP load of checkpoint dir ``path``; its failure becomes :class:`ShardedLoadError`.

    ``.metadata`` is read (and vetted) first, so an unsafe or unreadable one is a clear error
    instead of DCP's wrapped one with a logged traceback.
    """
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    reader = kwargs["storage_reader"]
    try:
        reader.read_metadata()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as err:
        raise ShardedLoadError(f"{Path(path) / METADATA} is unreadable ({err})") from None
    try:
        _load_state_dict(**kwargs)
    except CheckpointException as err:  # a BaseException: would escape the CLI's one-line errors
        raise ShardedLoadError(
            f"cannot load the shards of {path} ({_first_failure(err)})"
        ) from None


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, f: io.BufferedIOBase, source: str) -> None:
        super().__init__(f)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        # A dotted name would walk attributes (module.os.system): never in DCP's metadata.
        if "." not in name:
            if (module, name) in _METADATA_GLOBALS:
                return super().find_class(module, name)
            if (module, "*") in _METADATA_GLOBALS:
                found = super().find_class(module, name)
                if isinstance(found, type) and found.__module__ == module:
                    return found
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"{self._source} asks to load {module}.{name}, which no DCP metadata holds; "
            "refusing to unpickle it (weights-only loading)"
        )


def _import_dcp() -> Any:
    import torch.distributed.checkpoint as dcp

    return dcp


# In a single process DCP warns on every call (also from its async thread) that it assumes one:
# that is the intent here. A module-level filter, since catch_warnings is not thread-safe.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable")


def _reader_class() -> type:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeFileSystemReader(FileSystemReader):
        """DCP's file reader with ``.metadata`` read by a restricted unpickler."""

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            path = self._get_metadata_path(kwargs.get("rank"))
            with self.fs.create_stream(path, "rb") as f:
                metadata = _MetadataUnpickler(f, str(path)).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader


def safe_reader(path: str | Path) -> Any:
    """A DCP ``FileSystemReader`` for checkpoint dir ``path`` whose ``.metadata`` runs no code."""
    return _reader_class()(str(path))


def _weights_only_load_bytes(planner: Any, read_item: Any, value: io.BytesIO) -> None:
    from torch.distributed.checkpoint._traverse import set_element

    obj = torch.load(value, weights_only=True)
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[read_item.dest_index.fqn], obj)
    else:
        planner.state_dict[read_item.dest_index.fqn] = obj


def weights_only_planner(whole: bool = False, keys: Iterable[str] | None = None) -> Any:
    """DCP's load planner with non-tensor values read by ``torch.load(weights_only=True)``.

    ``whole``: load into an empty dict every key of the checkpoint (or of ``keys``), as
    ``torch.distributed.checkpoint.format_utils`` does for its conversion.
    """
    from torch.distributed.checkpoint.default_planner import (
        DefaultLoadPlanner,
        _EmptyStateDictLoadPlanner,
    )

    base = _EmptyStateDictLoadPlanner if whole else DefaultLoadPlanner

    class WeightsOnlyLoadPlanner(base):  # type: ignore[misc, valid-type]
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            _weights_only_load_bytes(self, read_item, value)

    if whole:
        return WeightsOnlyLoadPlanner(keys=set(keys) if keys is not None else None)
    return WeightsOnlyLoadPlanner()


# ---------------------------------------------------------------- state dicts


def _state_owners(optimizer: Optimizer) -> Optimizer | tuple[Optimizer, ...]:
    """The optimizer, or the inner optimizers of a composite one (``inner_optimizers()``, e.g.
    Muon + AdamW), as torch's state-dict helpers want them."""
    inner = getattr(optimizer, "inner_optimizers", None)
    return tuple(inner()) if callable(inner) else optimizer


def sharded_state_dict(model: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    """``{"model": ..., "optim": ...}`` keyed by parameter name, shards only (no gather)."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    raw = unwrap_model(model)
    return {
        "model": get_model_state_dict(raw),
        "optim": get_optimizer_state_dict(raw, _state_owners(optimizer)),
    }


def _match_checkpoint_keys(template: dict[str, Any], present: set[str]) -> None:
    """Ask DCP for exactly the optimizer entries the checkpoint holds.

    DCP loads only the keys of the state dict it is given; a fresh optimizer's template lacks
    keys that training added (the schedule's ``initial_lr`` in every param group) and has
    state for parameters the checkpoint has none for (never had a gradient). Both are matched
    to the checkpoint, so the load is exact instead of failing or keeping placeholders.
    """
    state = template["optim"]["state"]
    for fqn in list(state):
        for key in list(state[fqn]):
            if f"optim.state.{fqn}.{key}" not in present:
                del state[fqn][key]
        if not state[fqn]:
            del state[fqn]
    for i, group in enumerate(template["optim"]["param_groups"]):
        prefix = f"optim.param_groups.{i}."
        for key in list(group):
            if key != "params" and prefix + key not in present:
                del group[key]
        for name in present:
            key = name[len(prefix) :]
            if name.startswith(prefix) and "." not in key and key not in group:
                group[key] = None  # filled by the load


def load_sharded_state(
    path: str | Path,
    model: nn.Module,
    optimizer: Optimizer,
    process_group: dist.ProcessGroup | None = None,
) -> None:
    """Load checkpoint dir ``path``'s model and optimizer into ``model``/``optimizer`` in place,
    resharded to this run's layout; all ranks call it together."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    raw = unwrap_model(model)
    # A fresh optimizer has no state: get_optimizer_state_dict makes a placeholder with one
    # zero-gradient step at lr 0 (weights unchanged), which the load then overwrites.
    template = sharded_state_dict(raw, optimizer)
    reader = safe_reader(path)
    _match_checkpoint_keys(template, set(reader.read_metadata().state_dict_metadata))
    _dcp_load(
        path,
        state_dict=template,
        storage_reader=reader,
        planner=weights_only_planner(),
        process_group=process_group,
        no_dist=not (dist.is_available() and dist.is_initialized()),
    )
    set_model_state_dict(raw, template["model"])
    # Not strict: a parameter without saved state (never had a gradient) gets none, as it had.
    set_optimizer_state_dict(
        raw, _state_owners(optimizer), template["optim"], options=StateDictOptions(strict=False)
    )
    if callable(getattr(optimizer, "repoint_groups", None)):
        optimizer.repoint_groups()


def read_sharded_state(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The whole checkpoint (or its top-level ``keys``, e.g. ``{"model"}``) as plain CPU tensors
    in this process, with no process group: DTensor shards come back as full tensors."""
    sd: dict[str, Any] = {}
    _dcp_load(
        path,
        state_dict=sd,
        storage_reader=safe_reader(path),
        planner=weights_only_planner(whole=True, keys=keys),
        no_dist=True,
    )
    return sd


def _writer(path: Path) -> Any:
    from torch.distributed.checkpoint import FileSystemWriter

    # One file per rank (thread_count=1) keeps a rank's shards in __<rank>_0.distcp.
    return FileSystemWriter(str(path), thread_count=1, sync_files=True)


def raise_storage_error(err: BaseException, path: Path, rank: int) -> None:
    """Re-raise DCP's wrapped failure as the ``OSError`` inside it, naming the checkpoint dir
    when the OS named no file (a full disk is then the trainer's usual one-line error); other
    errors propagate as they are. This rank's own failure is preferred."""
    failures = getattr(err, "failures", None) or {}
    for _, wrapped in sorted(failures.items(), key=lambda kv: kv[0] != rank):
        inner = wrapped[0] if isinstance(wrapped, tuple) else wrapped
        io_err = os_error_in(inner) if isinstance(inner, BaseException) else None
        if io_err is not None:
            raise with_filename(io_err, path) from err
    io_err = os_error_in(err)
    if io_err is not None:
        raise with_filename(io_err, path) from err
    raise err


def save_sharded_state(
    state: dict[str, Any], path: Path, process_group: dist.ProcessGroup | None = None
) -> None:
    """Write ``state`` into dir ``path`` with DCP: this rank's shards, then rank 0's metadata."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        _import_dcp().save(state, storage_writer=_writer(path), process_group=process_group)
    except (CheckpointException, OSError, RuntimeError) as err:  # DCP's is a BaseException
        rank = dist.get_rank() if dist.is_initialized() else 0
        raise_storage_error(err, path, rank)


def async_save_sharded_state(
    state: dict[str, Any], path: Path, process_group: dist.ProcessGroup | None = None
) -> Future:
    """Stage ``state`` into a CPU copy (the only part the caller waits for) and write it with
    DCP in a background thread; the future resolves once ``.metadata`` is written."""
    return _import_dcp().async_save(
        state, storage_writer=_writer(path), process_group=process_group
    )


def shard_files(path: Path, rank: int | None = None) -> list[Path]:
    """DCP shard files in ``path`` (those rank ``rank`` wrote, when given), sorted by name."""
    pattern = f"__{rank}_*{SHARD_SUFFIX}" if rank is not None else f"*{SHARD_SUFFIX}"
    return sorted(path.glob(pattern))


def model_weights(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The full model weights of checkpoint dir ``ckpt`` as a plain ``{name: tensor}`` dict on
    the CPU (what ``model.load_state_dict`` takes), for any checkpoint format, in one process."""
    ckpt = Path(ckpt)
    if (ckpt / METADATA).is_file():
        return dict(read_sharded_state(ckpt, keys={"model"})["model"])
    if (ckpt / "state.pt").is_file():  # formats 1 and 2: full weights in state.pt
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state:
            return dict(state["model"])
    raise ValueError(
        f"{ckpt} is not a checkpoint with model weights (no {METADATA} or state.pt); point at "
        "<run_dir>/checkpoints/step_XXXXXXXX"
    )


def export_model_weights(ckpt: str | Path, out: str | Path) -> int:
    """Write checkpoint dir ``ckpt``'s model weights as one ``torch.save`` file (see
    :func:`model_weights`); returns the number of tensors written."""
    weights = model_weights(ckpt)
    torch.save(weights, out)
    return len(weights)
