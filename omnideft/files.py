"""Atomic writes: a file or folder appears under its name only when complete; a reader (or a crash) never sees half
of it, and a failed write leaves the previous version in place."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"  # what readers skip: unfinished files and folders (shards, checkpoints, outputs)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, unique: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (`.tmp-NAME`, or `.tmp-NAME.PID` with `unique` where processes may write
    the same file at once) to write a file or a folder into. On success it takes `path`'s place; on an exception it
    is removed and `path` stays as it was."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}" + (f".{os.getpid()}" if unique else ""))
    _remove(tmp)  # left by an earlier crash
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and final.is_dir():  # a folder cannot replace another in one rename: move the old one aside
        old = final.with_name(f".old-{final.name}")
        _remove(old)
        final.rename(old)
        tmp.rename(final)
        _remove(old)
    else:
        os.replace(tmp, final)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
