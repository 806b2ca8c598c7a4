"""The child process groups lai starts (instructor servers, training launchers): a port, stopping, reaping.

Written by hand instead of ``Popen.poll``/``Popen.wait(timeout)``: a Ctrl-C (or SIGTERM)
that lands inside ``Popen.poll`` can leave Popen's private waitpid lock held, after which
every ``wait(timeout)`` times out though the child is long gone. CI saw exactly that:
``lai serve-instructor`` failed with TimeoutExpired on Ctrl-C. Here the interrupt signals
are blocked around each ``waitpid`` call, so they land between calls, and no lock is
involved; the status is stored on the Popen so later Popen calls agree.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a server or a rendezvous lai starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reap(process: subprocess.Popen[Any], timeout_s: float = 0.0) -> int | None:
    """Wait up to ``timeout_s`` for ``process`` to exit; its exit status, or None while it runs."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.returncode is not None:
            return process.returncode
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            pid, status = os.waitpid(process.pid, os.WNOHANG)
            if pid == process.pid:
                process.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            process.returncode = 0
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if process.returncode is not None or time.monotonic() >= deadline:
            return process.returncode
        time.sleep(0.05)


def stop_group(process: subprocess.Popen[Any], term_wait_s: float = 10.0, kill_wait_s: float = 10.0) -> bool:
    """SIGTERM the process group led by ``process``, then SIGKILL it; True once the leader is reaped.

    The group, not the leader alone: servers and ``accelerate launch`` fork workers, and
    each child lai starts leads its own session (``start_new_session=True``).
    """
    for sig, wait_s in ((signal.SIGTERM, term_wait_s), (signal.SIGKILL, kill_wait_s)):
        if reap(process) is not None:
            return True
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return reap(process, timeout_s=1.0) is not None
        if reap(process, timeout_s=wait_s) is not None:
            return True
    return False
