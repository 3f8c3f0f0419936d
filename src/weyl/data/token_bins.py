"""The on-disk token format: ``train.bin`` / ``val.bin`` (flat uint16 memmaps) + ``meta.json``.

Same layout as nanoGPT's prepare scripts. Writes are crash-safe: each file is written under a
temporary name, fsynced and renamed into place, and ``meta.json`` is written last, so its
presence (with token counts matching the file sizes) means the set is complete.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from weyl.data.prepare_progress import DEFAULT_EVERY_S, PrepareProgress
from weyl.durable_files import fsync_dir, replace_durably

TOKEN_DTYPE = np.uint16
FORMAT = "weyl-tokens-v1"
SPLITS = ("train", "val")


def _temp_name(path: Path) -> Path:
    # Unique per writer, so concurrent preparers of the same set never share a partial file.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_token_file(
    path: str | os.PathLike[str],
    chunks: Iterable[np.ndarray],
    total: int,
    *,
    progress: str | None = None,
    progress_every_s: float = DEFAULT_EVERY_S,
) -> int:
    """Write ``total`` tokens from ``chunks`` to a uint16 memmap at ``path`` atomically.

    ``progress`` names the phase in the progress shown on stderr (none when None).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    bar = None
    if progress is not None:
        bar = PrepareProgress(progress, total_tokens=total, every_s=progress_every_s)
    try:
        arr = np.memmap(tmp, dtype=TOKEN_DTYPE, mode="w+", shape=(max(total, 1),))
        idx = 0
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.size and (chunk.min() < 0 or chunk.max() > np.iinfo(TOKEN_DTYPE).max):
                raise ValueError(f"token ids outside uint16 while writing {path}")
            if idx + chunk.size > total:
                raise ValueError(f"more tokens than announced ({total}) while writing {path}")
            arr[idx : idx + chunk.size] = chunk
            idx += chunk.size
            if bar is not None:
                bar.update(tokens=int(chunk.size))
        if idx != total:
            raise ValueError(f"wrote {idx} tokens to {path}, expected {total}")
        arr.flush()
        del arr
        if total == 0:
            os.truncate(tmp, 0)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if bar is not None:
            bar.close()
        if tmp.exists():
            tmp.unlink()
    return total


# One pass over a token file costs ~0.3 s per GiB from the page cache and ~1.7 s per GiB cold
# (measured: 0.03-0.17 s for 100 MB); sets prepared by weyl record the result in meta.json.
MAX_ID_SCAN_BYTES = 1 << 30


def max_token_id(path: str | os.PathLike[str], chunk: int = 1 << 24) -> int:
    """The largest token id in a token file (one chunked pass), -1 for an empty file."""
    tokens = open_tokens(path)
    largest = -1
    for start in range(0, len(tokens), chunk):
        largest = max(largest, int(tokens[start : start + chunk].max()))
    return largest


def write_meta(out_dir: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``meta.json`` atomically (the completion marker of a prepared set).

    Each split's largest token id is recorded (``splits.<split>.max_token_id``) so that a run
    can check it against the model's vocabulary without reading the bins again.
    """
    for split, info in meta.get("splits", {}).items():
        bin_path = Path(out_dir) / f"{split}.bin"
        if isinstance(info, dict) and "max_token_id" not in info and bin_path.is_file():
            info["max_token_id"] = max_token_id(bin_path)
    path = Path(out_dir) / "meta.json"
    text = json.dumps({"format": FORMAT, "dtype": "uint16", **meta}, indent=1)
    replace_durably(path, _temp_name(path), lambda f: f.write(text.encode()))
    return path


def read_meta(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``meta.json`` of a prepared set, checked against the bin sizes (ValueError if not)."""
    out_dir = Path(out_dir)
    with open(out_dir / "meta.json") as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{out_dir / 'meta.json'} is not a weyl token set (format {meta.get('format')!r})"
        )
    for split in SPLITS:
        expected = int(meta["splits"][split]["tokens"])
        path = out_dir / f"{split}.bin"
        actual = path.stat().st_size // np.dtype(TOKEN_DTYPE).itemsize if path.exists() else -1
        if actual != expected:
            raise ValueError(
                f"{path} holds {actual} tokens but meta.json says {expected}: incomplete or corrupt, "
                "prepare it again with --force"
            )
    return meta


def is_prepared(out_dir: str | os.PathLike[str]) -> bool:
    """Whether ``out_dir`` holds a complete, size-consistent token set."""
    try:
        read_meta(out_dir)
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return False
    return True


def open_tokens(path: str | os.PathLike[str]) -> np.ndarray:
    """Read-only uint16 memmap of a token file (an empty array for an empty file)."""
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partial(out_dir: str | os.PathLike[str]) -> int:
    """Remove temporary files left by interrupted preparations (dead writers only)."""
    out_dir = Path(out_dir)
    removed = 0
    if out_dir.is_dir():
        for tmp in out_dir.glob(".*.tmp"):
            parts = tmp.name.split(".")
            pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
            # A live writer (another process preparing the same set) keeps its file.
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                continue
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def largest_token_ids(out_dir: str | os.PathLike[str], meta: dict[str, Any]) -> dict[str, int]:
    """``{split: largest id}`` from meta.json, or from one pass over bins up to
    :data:`MAX_ID_SCAN_BYTES` in all (larger sets prepared elsewhere are not scanned)."""
    out_dir = Path(out_dir)
    recorded = {s: meta["splits"][s].get("max_token_id") for s in SPLITS}
    if all(isinstance(v, int) for v in recorded.values()):
        return recorded  # type: ignore[return-value]
    size = sum((out_dir / f"{s}.bin").stat().st_size for s in SPLITS)
    if size > MAX_ID_SCAN_BYTES:
        return {}
    return {s: max_token_id(out_dir / f"{s}.bin") for s in SPLITS}
