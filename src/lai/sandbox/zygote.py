"""The sandbox's server: one warm interpreter that forks a fresh sandbox per program.

Started once per lai process (``python -I -S -B zygote.py FD ISOLATE``) and fed requests
on a unix SEQPACKET socket: a JSON config plus four descriptors (stdout, stderr, a control
socket, a memfd with the code). Forking a warm interpreter instead of starting two new
ones (a bootstrap, then the program's ``python``) is what makes a sandboxed program cost
about as much as a bare interpreter. Per request it forks a *worker* that:

1. makes a memory cgroup nested under lai's own (where the kernel lets it; this and the
   root are in :mod:`hostfs`, a sibling file);
2. unshares mount, network, pid, IPC and UTS namespaces and builds a new root: a small
   read-only tmpfs with the system directories and the interpreter bind-mounted read
   only, five device nodes, no ``/proc``, ``/sys``, ``/run``, ``/home`` or source tree,
   and ``/tmp`` (also ``/var/tmp``, ``/dev/shm``) a size- and inode-limited tmpfs that is
   the program's whole writable disk; host unix sockets are out of reach (filesystem
   ones are not in this tree, abstract ones belong to the host's network namespace);
3. forks the namespace's init, which forks the program's process: rlimits, a fresh
   uid, ``no_new_privs``, then :func:`harness.run` in that already-warm interpreter;
4. enforces the wall-clock timeout, answers "stop" from lai, and when the init is gone
   (the kernel has then killed everything the program left), removes the cgroup and
   reports on the control socket: wait status, proof, timeout, OOM kill. Setup errors
   travel there too: the program never holds that socket.

The zygote never sees a program's code (the worker reads the memfd after forking) and
imports no ``random`` (a forked copy would repeat its sequence in every run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from typing import Any, NoReturn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402 - sibling files, not package imports: no lai on this path
import hostfs  # noqa: E402

del sys.path[0]

_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_libc, _check, _exit = hostfs.libc, hostfs.check, os._exit


# ---- one run ------------------------------------------------------------------------------


def _program(cfg: dict[str, Any], fds: dict[str, int], source: str) -> NoReturn:
    """The program's process: standard streams, limits, a fresh uid, then the harness."""
    high = {
        k: fcntl.fcntl(fds[k], fcntl.F_DUPFD_CLOEXEC, 100)
        for k in ("out", "err", "secret", "proof")
    }
    os.dup2(high["out"], 1)
    os.dup2(high["err"], 2)
    os.dup2(high["secret"], 3, inheritable=False)  # close-on-exec: a program that execs
    os.dup2(high["proof"], 4, inheritable=False)  # another binary loses both
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(5, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    for name, value in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), tuple(value))
    if cfg["isolate"]:
        uid = cfg["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # drops every capability
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
    else:  # the weak fallback: at least no sockets through the socket module

        def no_network(*_args: Any, **_kwargs: Any) -> Any:
            raise OSError("network access is disabled in the sandbox")

        socket.socket = socket.create_connection = socket.socketpair = no_network  # type: ignore[assignment,misc]
    os.chdir(cfg["workdir"])
    os.umask(0o022)
    os.environ.clear()
    os.environ.update({**cfg["env"], "HOME": cfg["workdir"]})
    program = os.path.join(cfg["workdir"], "main.py")
    harness.run(source, program, 3, 4, cfg["recursion_cap"])


def _init(cfg: dict[str, Any], fds: dict[str, int], source: str, join_fd: int) -> NoReturn:
    """pid 1 of the new pid namespace: fork the program, reap orphans, report its status.

    The program must not be pid 1 (init ignores most signals); when this process exits,
    the kernel kills and reaps everything left in the namespace.
    """
    # (getppid() is 0 here: the worker is outside this pid namespace, so there is no
    # check for a worker that died before this line; nothing in the sandbox can kill it)
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    if join_fd >= 0:  # join before forking: every descendant is counted
        os.write(join_fd, b"0")
        os.close(join_fd)
    main = os.fork()
    if main == 0:
        try:
            _program(cfg, fds, source)
        finally:
            _exit(1)
    for key in ("out", "err", "secret", "proof"):
        os.close(fds[key])
    while (reaped := os.waitpid(-1, 0))[0] != main:
        pass
    os.write(fds["status"], str(reaped[1]).encode())
    _exit(0)


def _wait(pid: int, ctl: socket.socket, deadline: float) -> str:
    """Until the child ends ("exited"), the deadline ("timeout"), or lai says stop or goes
    away ("stopped", "gone")."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # an old kernel: poll waitpid instead
        pidfd = -1
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            step = left if pidfd >= 0 else min(left, 0.005)
            for fd, _ in poller.poll(max(1, int(step * 1000))):
                if fd == ctl.fileno():
                    return "stopped" if ctl.recv(64) else "gone"
                return "exited"
            if pidfd < 0 and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                return "exited"
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _proves(proof: bytes, secret: bytes) -> bool:
    """The secret, once or more (a program that forked without exiting the child runs its
    tests twice, and both copies prove their end), and nothing else."""
    copies, rest = divmod(len(proof), len(secret))
    return copies > 0 and rest == 0 and proof == secret * copies


def worker(cfg: dict[str, Any], out: int, err: int, ctl: socket.socket, code_fd: int) -> None:
    """Build one sandbox, run one program in it, clean up, report. Runs as a zygote child."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; we must wait
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    isolate, started = cfg["isolate"], time.monotonic()
    cgroup = None
    try:
        source = os.pread(code_fd, os.fstat(code_fd).st_size, 0).decode("utf-8", "surrogatepass")
        os.close(code_fd)
        if isolate:
            cgroup = hostfs.Cgroup(cfg["cgroup_bytes"])
            hostfs.build_root(cfg, source)
        else:
            os.mkdir(cfg["workdir"], 0o700)
            with open(
                os.path.join(cfg["workdir"], "main.py"),
                "w",
                encoding="utf-8",
                errors="surrogatepass",
            ) as handle:
                handle.write(source)
    except Exception as exc:  # noqa: BLE001 - the sandbox's fault, reported as such
        if cgroup:
            cgroup.remove()
        if not isolate:
            hostfs.remove_tree(cfg["workdir"])
        ctl.send(
            json.dumps({"kind": "error", "message": f"sandbox setup failed: {exc!r}"}).encode()
        )
        return
    secret_r, secret_w = os.pipe()
    proof_r, proof_w = os.pipe()
    status_r, status_w = os.pipe()
    fds = {"out": out, "err": err, "secret": secret_r, "proof": proof_w, "status": status_w}
    join_fd = cgroup.join_fd() if cgroup else -1
    start = time.monotonic()
    child = os.fork()
    if child == 0:
        try:
            ctl.close()
            for fd in (secret_w, proof_r, status_r):
                os.close(fd)
            if isolate:
                _init(cfg, fds, source, join_fd)
            os.setpgid(0, 0)  # the fallback kills the whole group at the end
            os.close(status_w)
            _program(cfg, fds, source)
        finally:
            _exit(1)
    for fd in (out, err, secret_r, proof_w, status_w, *([join_fd] if join_fd >= 0 else [])):
        os.close(fd)
    if not isolate:  # also here, against the race with the child's own setpgid
        with contextlib.suppress(OSError):
            os.setpgid(child, child)
    secret = os.urandom(harness.SECRET_BYTES)  # made after the fork: no copy in the child
    os.write(secret_w, secret)
    os.close(secret_w)
    outcome = _wait(child, ctl, start + cfg["timeout_s"])
    if outcome != "exited":
        with contextlib.suppress(ProcessLookupError):
            (os.kill if isolate else os.killpg)(child, signal.SIGKILL)
    status = os.waitpid(child, 0)[1]
    seconds = time.monotonic() - start
    if isolate:  # init's report of the program's status, if it lived to send one
        reported = os.read(status_r, 32)
        status = int(reported) if reported and outcome == "exited" else None
    os.set_blocking(proof_r, False)  # (in the fallback an escaped process may hold it)
    proof = b""
    with contextlib.suppress(OSError):
        proof = os.read(proof_r, 1 << 16)
    oom = cgroup.oom_killed() if cgroup else False
    if isolate:  # inside our own mount namespace: the quota tmpfs goes before its cgroup
        _libc.umount2(hostfs.WORKDIR.encode(), hostfs.DETACH)
    removed = cgroup.remove() if cgroup else True
    if not isolate:
        removed = hostfs.remove_tree(cfg["workdir"]) and removed
    if outcome != "gone":
        ctl.send(json.dumps({
            "kind": "done", "status": status, "outcome": outcome, "seconds": seconds,
            "proof": _proves(proof, secret), "oom": oom, "cleaned": removed,
            "cgroup": cgroup.placement if cgroup else "none", "setup_s": start - started,
        }).encode())  # fmt: skip


# ---- the server ---------------------------------------------------------------------------


def serve(fd: int, idle_s: float) -> None:
    """Fork a worker per request until lai closes the socket (or exits), or nothing comes
    for `idle_s` (lai starts a new server on demand and resends a request lost to that)."""
    server = socket.socket(fileno=fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is lai's to handle
    size = socket.CMSG_SPACE(4 * 4)
    poller = select.poll()
    poller.register(server, select.POLLIN)
    while True:
        if not poller.poll(int(idle_s * 1000)):
            return
        try:
            message, ancillary, _, _ = server.recvmsg(1 << 16, size)
        except InterruptedError:
            continue
        fds: list[int] = []
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.extend(
                    int.from_bytes(data[i : i + 4], sys.byteorder)
                    for i in range(0, len(data) - 3, 4)
                )
        if not message:
            return
        if len(fds) == 4:
            pid = os.fork()
            if pid == 0:
                try:
                    server.close()
                    out, err, ctl, code = fds
                    worker(json.loads(message), out, err, socket.socket(fileno=ctl), code)
                finally:
                    _exit(0)
        for received in fds:
            os.close(received)


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]))
