"""Read an offline wandb run file (``offline-run-*/run-*.wandb``) without the network.

The file is a LevelDB-style log (7-byte header ``:W&B`` + version, then 32 KiB blocks of
records, each ``crc32c(4) length(2) type(1)`` + payload, type 1 = full record, 2/3/4 =
first/middle/last fragment) of ``wandb_internal_pb2.Record`` messages. This reader lets
tests and ``weyl`` users check what an offline run holds before ``wandb sync``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7


@dataclass
class OfflineRun:
    """What an offline run file recorded: run identity, config and logged history rows."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _records(data: bytes) -> list[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a wandb run file (missing the :W&B header)")
    pos, pending, out = _HEADER, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        if kind == 0 and length == 0:
            break
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):
            out.append(pending)
            pending = b""
    return out


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_offline_run(path: str | Path) -> OfflineRun:
    """Parse one ``run-*.wandb`` file (or the ``offline-run-*`` directory holding it)."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"{path}: no run-*.wandb file")
        path = files[0]
    run = OfflineRun()
    for payload in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group, run.name = (
                r.run_id,
                r.project,
                r.run_group,
                r.display_name,
            )
            run.tags = list(r.tags)
            run.config.update({item.key: _value(item.value_json) for item in r.config.update})
        elif kind == "config":
            run.config.update({item.key: _value(item.value_json) for item in record.config.update})
        elif kind == "history":
            run.history.append(
                {
                    item.key or "/".join(item.nested_key): _value(item.value_json)
                    for item in record.history.item
                }
            )
    return run
