"""Atomic writes: a file or folder appears under its name only when complete; a reader (or a crash) never sees half
of it, and a failed write leaves the previous version in place. A full disk is one line naming the path and the
space it needed (`DiskFull`), with the temporary copy removed."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from omnideft.errors import UserError

TMP_PREFIX = ".tmp-"  # what readers skip: unfinished files and folders (shards, checkpoints, outputs)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, unique: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (`.tmp-NAME`, or `.tmp-NAME.PID` with `unique` where processes may write
    the same file at once) to write a file or a folder into. On success it takes `path`'s place; on an exception it
    is removed and `path` stays as it was."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}" + (f".{os.getpid()}" if unique else ""))
    remove_path(tmp)  # left by an earlier crash
    try:
        yield tmp
    except OSError as exc:
        written = tree_bytes(tmp)
        remove_path(tmp)
        if is_disk_full(exc):
            raise DiskFull(final, written, exc.strerror or str(exc)) from None
        raise
    except BaseException:
        remove_path(tmp)
        raise
    if tmp.is_dir() and final.is_dir():  # a folder cannot replace another in one rename: move the old one aside
        old = final.with_name(f".old-{final.name}")
        remove_path(old)
        final.rename(old)
        tmp.rename(final)
        remove_path(old)
    else:
        os.replace(tmp, final)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def remove_path(path: Path) -> None:
    """Delete a file, a symlink or a folder tree; nothing there is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


# Errors of a write that cannot grow a file: no space, a quota, a file-size limit (RLIMIT_FSIZE, a full tmpfs).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class DiskFull(UserError):
    """A write failed for lack of space: names the path, what it had written when it failed (so the space it
    needs is at least that) and what is free there."""

    def __init__(self, path: str | os.PathLike, needed: int, reason: str):
        path = Path(path)
        free = free_bytes(path)
        need = f"it needs more than {_mb(needed)}; " if needed else ""
        super().__init__(f"cannot write {path}: {reason} ({need}{_mb(free)} free there); free some space and run "
                         "again - what was written before is unchanged")
        self.path, self.needed, self.reason = path, needed, reason


def free_bytes(path: Path) -> int:
    for folder in [path, *path.parents]:
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def tree_bytes(path: Path) -> int:
    """Bytes in a file or a folder tree (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _mb(n: int) -> str:
    """Bytes for a person: 900 B, 12.3 kB, 4.5 MB, 1.2 GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
