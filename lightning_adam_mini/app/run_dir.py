"""`RunDirLock`: one live ``lam-train`` run per output directory.

Two runs writing into one directory would overwrite each other's ``metrics.json`` and interleave
``csv/metrics.csv``. The default directories are unique (microseconds and the process id, see
``configs/hydra/default.yaml``); this lock also stops a run from writing into a directory that
another live run holds (``hydra.run.dir=`` given twice, or a resume into a running run's dir).
The lock is ``fcntl.flock`` on ``lam-train.lock``: the OS releases it when the process ends, so a
killed run leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType


class RunDirInUseError(RuntimeError):
    """Another live run holds the run directory."""


class RunDirLock:
    """Context manager: hold ``run_dir/lam-train.lock`` exclusively, or raise :class:`RunDirInUseError`
    naming the process that holds it."""

    FILE = "lam-train.lock"

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / self.FILE
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirInUseError(
                f"run directory {self.path.parent} is in use by a live lam-train run ({holder}); "
                "give this run its own directory (leave hydra.run.dir at its default, which is "
                "unique per run)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
