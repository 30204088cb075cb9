"""Writing the broker's files: whole, atomically, never readable beyond owner and group.

A file is written to a `mkstemp` sibling (created 0600, set to 0640 before a byte of content,
so no moment exists with wider rights), fsynced, and swapped in with `os.replace`; a reader (the
broker on SIGHUP) sees the old file or the new one, never half of one. An `fcntl.flock` on a
lock file serialises writers across processes (several server replicas, ``broker-config``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fleet_server.exceptions import BrokerAuthError

FILE_MODE = 0o640


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, atomically and with mode 0640."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise BrokerAuthError(f"cannot write {path}: {e}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), FILE_MODE)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):  # already renamed, or never written
            os.unlink(temporary)
        raise BrokerAuthError(f"cannot write {path}: {e}") from e


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_file` (created if missing) for the block."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as e:
        raise BrokerAuthError(f"cannot open the lock file {lock_file}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
