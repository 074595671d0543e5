"""One data directory, one router: an exclusive lock on it for the process's life.

Two routers started with the same `--data-dir` (two checkouts running `make run` as
one user, say) would have two bundled nats-servers write the same store files: both
lead, each shows the other's live instances UNHEALTHY, and records are lost. The
second one now stops at start with one line instead. The lock is the kernel's
(`flock`): a router that dies, even by SIGKILL, leaves none behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from actors.errors import StartupError

__all__ = ["DataDirInUse", "DataDirLock"]

_LOCK_FILE = "router.lock"


class DataDirInUse(StartupError):
    """Another router holds the data directory."""


class DataDirLock:
    """Held from `acquire` until `release` (or the process ends)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `DataDirInUse` naming the directory (and the pid of
        its holder, when it wrote one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirInUse(
                f"another ipc-router uses the data directory {self.directory}{by}: stop it, "
                "or give this one a directory of its own with --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # (closing the descriptor releases the lock)
