"""One writer per output folder: `FolderLock` holds `<folder>/.omnideft.lock` (train's output.dir, a builder's
--out) so a second run into the same folder stops at once, naming the holder's pid and host.

The lock is an exclusive POSIX record lock (`lockf`) on that file, held for the life of the run; the file's text
only names the holder. The kernel drops the lock when its process dies, so a lock left by a killed run (kill -9, a
lost node) is taken over without asking, and a file naming a dead pid is never a reason to refuse. Record locks
rather than `flock`: forked workers (data loaders, builder pools) do not inherit them, so an orphaned worker never
keeps a folder locked, and they work across hosts on NFS. They are per process, so this process's own holds are
also kept in `_HELD`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from omnideft.errors import UserError

LOCK_NAME = ".omnideft.lock"
_HELD: set[str] = set()  # lock files this process holds (record locks never conflict within one process)


class FolderLock:
    """`with FolderLock(folder, "output.dir"):` or acquire()/release(). Folders the lock had to create are removed
    on release when they are still empty, so a run refused later (bad input) leaves nothing behind."""

    def __init__(self, folder: str | os.PathLike, what: str, name: str = LOCK_NAME):
        self.folder = Path(folder)
        self.what = what  # how the user named the folder: "output.dir", "--out"
        self.path = self.folder / name
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> FolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.what} {self.folder} is a file, not a folder")
        self._make_folder()
        key = os.path.realpath(self.path)
        if key in _HELD:
            self.release()
            raise UserError(f"{self.what} {self.folder} is in use by this process (pid {os.getpid()}); wait for "
                            "that run to finish or choose another folder")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # EACCES or EAGAIN: another process holds it
                holder = self._holder(fd)
                os.close(fd)
                self.release()
                raise UserError(f"{self.what} {self.folder} is in use by {holder}; wait for it to finish "
                                "or choose another folder") from None
            # The file may have been unlinked by its previous holder between our open and our flock: then we hold
            # a lock on a name nobody else sees. Retry on the current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode() + b"\n")
        self._fd = fd
        _HELD.add(key)
        return self

    def release(self) -> None:
        if self._fd is not None:
            _HELD.discard(os.path.realpath(self.path))
            self.path.unlink(missing_ok=True)  # while still locked: nobody can take it in between
            os.close(self._fd)
            self._fd = None
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only when empty: the run wrote nothing
            except OSError:
                break
        self._created = []

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _make_folder(self) -> None:
        missing = []
        for folder in [self.folder, *self.folder.parents]:
            if folder.exists():
                break
            missing.append(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._created = list(reversed(missing))

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode())
            return f"pid {info['pid']} on host {info['host']} (since {info['since']})"
        except (ValueError, KeyError, TypeError, OSError):
            return "another process (it has not written its pid yet)"


def check_unlocked(folder: str | os.PathLike, what: str) -> None:
    """Fail now when another run holds `folder`; takes nothing (a launcher whose child processes take the lock)."""
    if Path(folder, LOCK_NAME).is_file():
        FolderLock(folder, what).acquire().release()
