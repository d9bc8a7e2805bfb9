"""One writing command per database at a time.

SQLite serialises single transactions, but a ``load`` is many: it creates the
database, downloads a URL, loads file after file, and a failed first load
removes the database it created.  Two loads on one path must therefore not
overlap at all, or one's cleanup could delete what the other committed.  The
lock is an advisory ``flock`` on ``<db>.write-lock`` beside the database, held
for the whole run, and removed by its holder when the run ends, so nothing
stays behind.  Unlinking a lock file while others wait on it is safe: a waiter
that wakes holding an inode no longer at that path opens the path again.

``flock`` locks belong to the open file, so they are released when the
process dies, even by SIGKILL: a stale lock file never blocks a later run.
"""
from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from typing import Callable, Iterator

LOCK_SUFFIX = ".write-lock"


class WriteLockError(OSError):
    """The lock file could not be made (a directory that is missing or read-only)."""


def lock_path(db_path: str) -> str:
    return db_path + LOCK_SUFFIX


def _holder(fd: int) -> str:
    """The pid the holder wrote into the lock file, for the waiting message ('' if unknown)."""
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


@contextmanager
def exclusive_writer(db_path: str, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the database's write lock for the body; wait while another process holds it.

    ``on_wait`` is called once, with the holder's pid (or ''), before blocking,
    so a command can say why it is not progressing.
    """
    path = lock_path(db_path)
    told = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as ex:
            raise WriteLockError(ex.errno, f"cannot create the lock file {path} ({ex.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as ex:
                if ex.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if on_wait and not told:
                    told = True
                    on_wait(_holder(fd))
                fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                # the previous holder removed this file as it finished: lock the new one
                os.close(fd)
                continue
        except BaseException:
            os.close(fd)
            raise
        break
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        pass  # the pid is only for the message of a waiter
    try:
        yield
    finally:
        # unlink while still holding the lock, so a waiter never locks a file a third process sees as free
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)
