"""No test leaves a process behind: the test session adopts every orphan and checks at the end.

pytest is made a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so a process a test
started, or a daemon that one of those double-forked, is re-parented to pytest instead of
to init when its parent dies. At the end of the session every descendant of pytest still
alive after a grace period is listed, killed with SIGKILL and turns the session red:
a leak is found the day it is written, not 28 minutes into the next CI run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def adopt_orphans() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _stat(pid: int) -> tuple[int, str] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0]  # parent pid, state


def descendants(root: int) -> list[int]:
    """Living (not zombie) descendants of ``root``."""
    parents: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            parents.setdefault(found[0], []).append(int(entry))
            states[int(entry)] = found[1]
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return [pid for pid in out if states.get(pid) not in {"Z", "X"}]


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def leftovers(grace_s: float = 15.0) -> list[str]:
    """Descendants still alive after ``grace_s`` (each killed): ``pid command`` lines."""
    deadline = time.monotonic() + grace_s
    while True:
        reap_zombies()
        alive = descendants(os.getpid())
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    found = [f"{pid} {command_line(pid)}" for pid in alive]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    reap_zombies()
    return found
