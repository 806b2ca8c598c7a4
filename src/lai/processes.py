"""The child process groups lai starts (instructor servers, training launchers): a port, the
CPUs they may use, stopping, reaping, and saying why one died.

Written by hand instead of ``Popen.poll``/``Popen.wait(timeout)``: a Ctrl-C (or SIGTERM)
that lands inside ``Popen.poll`` can leave Popen's private waitpid lock held, after which
every ``wait(timeout)`` times out though the child is long gone. CI saw exactly that:
``lai serve-instructor`` failed with TimeoutExpired on Ctrl-C. Here the interrupt signals
are blocked around each ``waitpid`` call, so they land between calls, and no lock is
involved; the status is stored on the Popen so later Popen calls agree.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
#: What a death by signal usually means, for the one-line error (the rest: the signal's name).
SIGNAL_MEANINGS = {
    signal.SIGILL: "illegal instruction: the program was built for CPU features this machine cannot run",
    signal.SIGKILL: "killed: often the kernel's out-of-memory killer (see dmesg), or kill -9",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "aborted",
    signal.SIGFPE: "arithmetic fault",
    signal.SIGTERM: "terminated by SIGTERM from outside",
}
# Lines that say nothing about a death: HTTP access logs and blank or decorative lines.
_NOISE = re.compile(r'^\s*$|"(GET|POST|HEAD) [^"]*" \d{3}|^INFO:\s+\d+\.\d+\.\d+\.\d+:\d+ - |^[-=~*#]+$')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a server or a rendezvous lai starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: libgomp's spin count before an idle thread sleeps (see short_openmp_spins).
GOMP_SPINCOUNT = "1000"


def short_openmp_spins(environ: MutableMapping[str, str]) -> None:
    """Let OpenMP threads (torch's, llama.cpp's) spin briefly, then sleep, unless the user chose.

    By default libgomp spins 300,000 times before it sleeps. Beside one CPU-bound
    neighbour on 2 cores, a thread then spins at every barrier while the thread it waits
    for is descheduled: the embedded instructor fell from ~147 to 0.4 tokens/s, and a torch
    loop took 3-17x longer. Fully passive waits (``OMP_WAIT_POLICY=PASSIVE``) fix the busy
    case but, in the VMs measured, made llama.cpp's idle decoding 3x slower (a sleeping vCPU
    wakes slowly, and there are hundreds of barriers per token) and torch's 20 %. 1,000
    spins cost nothing idle; bench/README.md, "Busy machines", has the tables. GNU OpenMP
    only; other runtimes ignore it.
    """
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT


def usable_cpus() -> int:
    """How many CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the machine's CPUs, which overcounts in a container with a
    quota or under ``taskset``; a thread pool sized by it spin-waits for cores it never gets.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(proc_root: Path = Path("/proc/self/cgroup"), fs_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup and its parents, or None when unlimited.

    Read by hand because no maintained package reads both cgroup v2 (``cpu.max``) and v1
    (``cpu.cfs_quota_us``); the smallest limit on the path to the root applies.
    """
    try:
        lines = proc_root.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        path = path.strip().lstrip("/")
        if controllers == "":  # cgroup v2: one unified hierarchy
            parts = [p for p in path.split("/") if p]
            for depth in range(len(parts), -1, -1):
                limits += _quota_v2(fs_root.joinpath(*parts[:depth], "cpu.max"))
        elif "cpu" in controllers.split(","):
            for base in (fs_root / controllers, fs_root / "cpu", fs_root / "cpu,cpuacct"):
                if base.is_dir():
                    parts = [p for p in path.split("/") if p]
                    for depth in range(len(parts), -1, -1):
                        limits += _quota_v1(base.joinpath(*parts[:depth]))
                    break
    return min(limits) if limits else None


def _quota_v2(path: Path) -> list[float]:
    try:
        quota, period = path.read_text().split()[:2]
        return [] if quota == "max" else [int(quota) / int(period)]
    except (OSError, ValueError):
        return []


def _quota_v1(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return [quota / period] if quota > 0 and period > 0 else []
    except (OSError, ValueError):
        return []


def describe_exit(code: int) -> str:
    """``Popen.returncode`` in words: "exit status 3" or "killed by SIGILL (illegal instruction: ...)"."""
    if code >= 0:
        return f"exit status {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"killed by signal {-code}"
    meaning = SIGNAL_MEANINGS.get(sig)
    return f"killed by {sig.name}" + (f" ({meaning})" if meaning else "")


def last_meaningful_line(log_path: Path, max_chars: int = 240) -> str:
    """The last line of a child's log that says something (not an HTTP access line), on one line."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 65536))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        if not _NOISE.search(line):
            line = " ".join(line.split())
            return line if len(line) <= max_chars else line[: max_chars - 3] + "..."
    return ""


def death_notice(what: str, process: subprocess.Popen[Any], code: int, log_path: Path) -> str:
    """One line: which child died, how, and where its log is with its last meaningful line."""
    last = last_meaningful_line(log_path)
    said = f"; its log ({log_path}) ends: {last}" if last else f"; its log: {log_path}"
    return f"{what} (pid {process.pid}) died: {describe_exit(code)}{said}"


def reap(process: subprocess.Popen[Any], timeout_s: float = 0.0) -> int | None:
    """Wait up to ``timeout_s`` for ``process`` to exit; its exit status, or None while it runs."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.returncode is not None:
            return process.returncode
        # Blocking inside the try and unblocking (not restoring a saved mask) in the finally:
        # a signal already pending when SIG_BLOCK returns raises right there, and with the
        # block outside the try the finally never ran and SIGINT/SIGTERM stayed blocked for
        # good (a CI run saw `lai serve-instructor` ignore SIGTERM for 28 minutes).
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
            pid, status = os.waitpid(process.pid, os.WNOHANG)
            if pid == process.pid:
                process.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            process.returncode = 0
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)
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
