"""The history's file on disk, apart from what it holds: one writer at a time (an exclusive
`flock` on `<file>.lock`), a check at start-up, a damaged file moved aside, a read-only file
recognised as such. `webapp.engine.history.store` turns these into messages for people."""

import fcntl
import os
import sqlite3
import time
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the file's lock; `pid` is what it wrote there."""

    def __init__(self, pid: str):
        super().__init__(pid)
        self.pid = pid


def lock(path: Path) -> int:
    """An exclusive lock on `<path>.lock`, with this process's id written in it; its
    descriptor (closing it lets go). `LockHeld` if another process has it."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o644)
    try:
        # flock, not fcntl's record locks: those belong to the process, so a second store
        # in the same process (a test, a second app) would not be refused.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(pid) from None
    except BaseException:
        os.close(fd)
        raise
    stamp = f"{os.getpid()}\n".encode()
    os.pwrite(fd, stamp, 0)
    os.ftruncate(fd, len(stamp))
    return fd


def unlock(fd: int) -> None:
    """Let go of a lock `lock` took (closing its descriptor does it)."""
    os.close(fd)


def damage(db: sqlite3.Connection) -> str | None:
    """What `PRAGMA quick_check` finds wrong with an open database (None: nothing)."""
    try:
        rows = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_CORRUPT:
            raise  # not a database at all, or unreadable: not ours to move
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows)[:300]


def move_aside(path: Path) -> Path:
    """Rename a (closed) database to `<name>.damaged-<time>`, its write-ahead log with it;
    the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.damaged-{stamp}.{n}")
        n += 1
    os.rename(path, aside)
    # SQLite looks for `<name>-wal` beside the file; the shared-memory index is rebuilt
    # from the log, so it simply goes.
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        os.rename(wal, aside.with_name(aside.name + "-wal"))
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    return aside


def writable(path: Path) -> bool:
    """False for a file the kernel will not let this process write: mode bits, and for root
    too an immutable file (chattr +i) or a read-only mount."""
    return not path.exists() or os.access(path, os.W_OK)


def is_read_only(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because it could only open the file read-only."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code == sqlite3.SQLITE_READONLY or "readonly" in str(exc)
