"""One process per run directory: an exclusive lock the kernel holds for us.

Two ``lai run`` on the same folder would append the same ids twice, send every instructor
request twice and mix their reports. ``fcntl.flock`` on ``<run dir>/.lock`` prevents it:
the kernel releases the lock when the holder exits in any way (kill -9 included), so a
stale lock never needs cleaning up. The file holds the holder's pid and host, only for
the message the second process prints; whether the lock is held is the kernel's word,
never the file's.

Within one process the lock is re-entrant (counted), so code that opens a run twice (a
resume test, the CLI building a pipeline after a dry run) does not lock itself out.
flock does not work reliably on every network file system; there the lock is advisory
at best, which the README says.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from pathlib import Path

from lai.errors import LaiError

LOCK_NAME = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # resolved run dir -> (fd, count)
_guard = threading.Lock()


class RunDirBusy(LaiError):
    """Another process holds the run directory."""


def acquire(run_dir: Path) -> Path:
    """Lock ``run_dir`` for this process (re-entrant); raise :class:`RunDirBusy` if another holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    with _guard:
        if key in _held:
            fd, count = _held[key]
            _held[key] = (fd, count + 1)
            return key
        path = key / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirBusy(
                f"{run_dir} is in use by another lai process ({holder})",
                hint="wait for it to finish or stop it; one process per run directory",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        _held[key] = (fd, 1)
        return key


def release(key: Path) -> None:
    """Drop one hold of this process on the run directory; the last one unlocks it."""
    with _guard:
        if key not in _held:
            return
        fd, count = _held[key]
        if count > 1:
            _held[key] = (fd, count - 1)
            return
        del _held[key]
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
