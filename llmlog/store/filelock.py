"""An exclusive lock between processes of one host: `flock` on a file of its own.

`flock`, not `fcntl`'s record locks: a record lock belongs to the process, and closing any
descriptor of the file drops every one the process holds; a lock file of its own, never the
database, is opened once and kept. `flock` also blocks in the kernel, so a waiter wakes as
soon as the lock is let go (SQLite's busy handler sleeps in steps of up to 100 ms).

Between processes only: two threads using one `FileLock` share its descriptor, and `flock`
lets both in. Its callers hold a lock of their own process first (`Web.writing`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import threading
from collections.abc import Iterator


class FileLock:
    """`flock(LOCK_EX)` on `path`, made on first use with permission bits `mode` (exactly
    those, whatever the umask, so that whoever may use what it guards may take it; never
    more open than that) and kept open until `close`. With `owned`, a file found there that
    another user made is refused rather than trusted (a shared directory, as /tmp is)."""

    def __init__(self, path: str, mode: int = 0o600, *, owned: bool = False) -> None:
        self.path, self.mode, self.owned = path, mode & 0o666, owned
        self._fd: int | None = None
        self._pid = 0  # the process that opened `_fd`
        self._opening = threading.Lock()

    def _open(self) -> int:
        with self._opening:
            if self._fd is not None and self._pid == os.getpid():
                return self._fd
            if self._fd is not None:
                # Inherited through a fork: the parent's open file, and a flock on it is the
                # parent's too (taking it here would pass while the parent holds it; letting
                # go here would let go there). Closing this copy leaves the parent's as it is.
                os.close(self._fd)
                self._fd = None
            # Read-only is enough for flock, and lets a user who may only read the file lock it.
            # No symbolic link is followed: in a shared directory one could point anywhere.
            flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.mode)
            except FileExistsError:
                fd = os.open(self.path, flags)
            else:
                try:
                    os.fchmod(fd, self.mode)  # the umask may have taken bits the mode gives
                except OSError:
                    os.close(fd)
                    raise
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or (self.owned and info.st_uid != os.geteuid()):
                os.close(fd)
                raise PermissionError(f"{self.path}: not a lock file of this user's; remove it")
            self._fd, self._pid = fd, os.getpid()
            return fd

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        fd = self._open()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._opening:
            if self._fd is not None:
                os.close(self._fd)  # lets go of the lock too, were it held
                self._fd = None
