"""Crash-safe file replacement: a reader sees the old file or the new one, never a torn one.

The one implementation of write-then-rename in weyl: :func:`write_durably` for bytes or text,
:func:`replace_durably` for a writer callback (``torch.save``). A replacement is written first
to :func:`temp_path` (``.tmp-<name>`` beside the file), a name that marks a killed write's
leftover for clean-up.

A failed write (disk full, permission denied) leaves no temporary file behind and surfaces as an
``OSError`` that names the file, even where the failing library (``torch.save``) wrapped it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_in(err: BaseException) -> OSError | None:
    """``err`` itself or the first ``OSError`` it was raised from (``torch.save`` turns a failed
    write into a RuntimeError whose context is the OSError)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        if current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__
        else:
            current = current.__context__
    return None


def with_filename(err: OSError, path: Path | str) -> OSError:
    """``err`` naming ``path`` when it names no file (a failed ``write()`` carries no name)."""
    if err.filename is not None:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def replace_durably(path: Path, tmp: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``tmp`` (same directory): write, fsync, rename, fsync the dir.

    On any failure ``tmp`` is removed and ``path`` is left as it was; an I/O failure is raised
    as an ``OSError`` naming ``path`` (when the OS named no file).
    """
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        io_err = os_error_in(err)
        if io_err is None:
            raise
        named = with_filename(io_err, path)  # the file the user knows, not its temp name
        if named is err:
            raise
        raise named from err
    fsync_dir(path.parent)


def temp_path(path: Path) -> Path:
    """``.tmp-<name>`` beside ``path``: where the replacement of ``path`` is written first."""
    return path.with_name(TMP_PREFIX + path.name)


def write_durably(path: Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` (text as UTF-8) through :func:`temp_path`, crash-safely.

    Failures behave as in :func:`replace_durably`: ``path`` is left as it was, no temp file.
    """
    raw = data.encode() if isinstance(data, str) else data
    replace_durably(path, temp_path(path), lambda f: f.write(raw))


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Rewrite an existing file's content without allocating: for when the disk is full.

    Only the blocks the file already holds are reused (a rewrite that fits in them needs no free
    space, measured on a full tmpfs); not atomic, so use it only after ``replace_durably`` failed.
    Raises ``OSError(ENOSPC)`` when ``data`` does not fit.
    """
    import errno

    with open(path, "r+b") as f:
        allocated = os.fstat(f.fileno()).st_blocks * 512
        if len(data) > allocated:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        f.write(data)
        f.truncate(len(data))
        f.flush()
        os.fsync(f.fileno())
