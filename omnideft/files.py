"""Atomic writes: a file or folder appears under its name only when complete; a reader (or a crash) never sees half
of it, and a failed write leaves the previous version in place. A full disk is one line naming the path and the
space it needed (`DiskFull`), with the temporary copy removed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from omnideft.errors import UserError

TMP_PREFIX = ".tmp-"  # what readers skip: unfinished files and folders (shards, checkpoints, outputs)
OWNER_FILE = ".omnideft-output"  # in a folder written for a verb: which verb wrote it, so a rerun may replace it


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, unique: bool = False, *, writer: str | None = None,
                replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (`.tmp-NAME`, or `.tmp-NAME.PID` with `unique` where processes may write
    the same file at once) to write a file or a folder into. On success it takes `path`'s place; on an exception it
    is removed and `path` stays as it was.

    No verb replaces what it did not write: an existing folder at `path` is replaced only when it is empty, when it
    is `writer`'s own earlier output (its OWNER_FILE names `writer`, e.g. "omnideft pretrain"; a folder written with
    a `writer` records it), or with `replace`, which a caller passes only for folders it owns by other means (the
    trainer's run folder, held under its lock). Anything else is one line naming the folder, before the write."""
    final = Path(path)
    _check_parent(final)  # the folder's own check waits for the end: only then is it known what replaces it
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(final, exc) from None
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}" + (f".{os.getpid()}" if unique else ""))
    remove_path(tmp)  # left by an earlier crash
    try:
        yield tmp
        if writer and tmp.is_dir():
            (tmp / OWNER_FILE).write_text(json.dumps({"written_by": writer}) + "\n")
        share_safetensors(tmp, final.name)
    except OSError as exc:
        written = tree_bytes(tmp)
        remove_path(tmp)
        if is_disk_full(exc):
            raise DiskFull(final, written, exc.strerror or str(exc)) from None
        if is_path_error(exc):
            raise _cannot_write(final, exc) from None
        raise
    except BaseException:
        remove_path(tmp)
        raise
    try:
        _put_in_place(tmp, final, writer, replace)
    except BaseException:
        remove_path(tmp)
        raise


def share_safetensors(path: Path, name: str) -> None:
    """Give the `.safetensors` file `path` (a temporary name of the file `name`), or each one under the folder
    `path`, the mode any new file gets (0o666 less the umask), as the config.json beside it has. Why: safetensors
    >= 0.8 writes through a temporary file created 0600 whatever the umask (safetensors/safetensors#782; PEFT's and
    diffusers' save_pretrained call it), so a lab's colleagues could not load an adapter or a model one of them
    trained."""
    if path.is_dir():
        files = [f for f in path.rglob("*.safetensors") if f.is_file() and not f.is_symlink()]
    else:
        files = [path] if name.endswith(".safetensors") and path.is_file() and not path.is_symlink() else []
    mode = 0o666 & ~current_umask()
    for file in files:
        file.chmod(mode)


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux); else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _put_in_place(tmp: Path, final: Path, writer: str | None, replace: bool) -> None:
    if tmp.is_dir() and final.exists() and not final.is_dir():
        raise UserError(f"{final} is a file, not a folder; name a new or empty folder for this output - the file is "
                        "unchanged")
    if not tmp.is_dir() and final.is_dir() and not final.is_symlink():
        raise UserError(f"{final} is a folder, not a file; name a file for this output - the folder is unchanged")
    if tmp.is_dir() and final.is_dir():  # a folder cannot replace another in one rename: move the old one aside
        check_output_folder(final, writer, replace)  # again: it may have filled up while the new one was written
        old = final.with_name(f".old-{final.name}")
        remove_path(old)
        final.rename(old)
        tmp.rename(final)
        remove_path(old)
    else:
        os.replace(tmp, final)


def check_output_folder(path: str | os.PathLike, writer: str | None = None, replace: bool = False) -> Path:
    """Refuse, in one line naming it, an output folder that atomic_path(path, writer=writer) would refuse: a file
    where the folder goes, a parent that is a file or not writable, an existing folder holding files that are not
    `writer`'s own earlier output. Verbs call it before their work, so nothing is computed for a refused folder."""
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise UserError(f"{final} is a file, not a folder; name a new or empty folder for this output - the file is "
                        "unchanged")
    if not final.exists():
        _check_parent(final)
        return final
    if not _writable(final):
        raise UserError(f"cannot write into {final}: permission denied")
    if replace:
        return final
    try:
        names = os.listdir(final)
    except OSError as exc:
        raise _cannot_write(final, exc) from None
    if not names:
        return final
    owner = folder_writer(final)
    if writer and owner == writer:
        return final
    held = f"holds the output of `{owner}`" if owner else f"holds files omnideft did not write ({min(names)}, ...)"
    raise UserError(f"{final} {held}; name a new or empty folder (or move them away) - nothing in it was changed")


def folder_writer(folder: Path) -> str | None:
    """The verb recorded in `folder`'s OWNER_FILE, or None (no record, or one that does not parse)."""
    try:
        record = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record.get("written_by") if isinstance(record, dict) else None


def _check_parent(final: Path) -> None:
    """The nearest existing ancestor of `final` must be a folder this process may write into."""
    for parent in final.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot create {final}: {parent} is a file, not a folder")
            if not _writable(parent):
                raise UserError(f"cannot create {final}: {parent} is not writable (permission denied)")
            return


def _writable(folder: Path) -> bool:
    """May this process create files in `folder`? Asked as the kernel will: with the effective user."""
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


# Errors that name a path the user chose badly: no permission, a read-only filesystem, a file where a folder goes.
PATH_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


def is_path_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in PATH_ERRNOS


def _cannot_write(final: Path, exc: OSError) -> UserError:
    where = exc.filename if exc.filename and str(exc.filename) != str(final) else None
    return UserError(f"cannot write {final}: {exc.strerror or exc}" + (f" ({where})" if where else ""))


def read_user_text(path: Path, what: str, expected: str) -> str:
    """A UTF-8 text file the user named (`what`: its flag or recipe key; `expected`: what it should be, for the
    message): one line when it is a folder, missing, unreadable or not UTF-8."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not {expected}")
    if not path.exists():
        raise UserError(f"{what} {path} does not exist ({expected})")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is unreadable ({type(exc).__name__}: {exc})") from None


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
