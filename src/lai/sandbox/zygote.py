"""The sandbox's server: one warm interpreter that forks a fresh sandbox per program.

Started once per lai process (``python -I -S -B zygote.py FD ISOLATE``) and fed requests
on a unix SEQPACKET socket: a JSON config plus four descriptors (stdout, stderr, a control
socket, a memfd with the code). Forking a warm interpreter instead of starting two new
ones (a bootstrap, then the program's ``python``) is what makes a sandboxed program cost
about as much as a bare interpreter. Per request it forks a *worker* that:

1. makes a memory cgroup nested under lai's own (where the kernel lets it);
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
import ctypes
import fcntl
import json
import os
import platform
import re
import resource
import select
import signal
import socket
import sys
import time
from typing import Any, NoReturn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402 - a sibling file, not a package import: no lai on this path

del sys.path[0]

_CLONE = 0x00020000 | 0x04000000 | 0x08000000 | 0x20000000 | 0x40000000  # NS UTS IPC PID NET
_RDONLY, _NOSUID, _NODEV, _NOEXEC, _REMOUNT = 1, 2, 4, 8, 32
_BIND, _MOVE, _REC, _PRIVATE, _DETACH = 4096, 8192, 16384, 1 << 18, 2
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}.get(platform.machine())
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_DEVICES = ("null", "zero", "full", "random", "urandom")
_ROOT_MOUNTPOINTS = ("/mnt", "/tmp", "/var/tmp", "/media", "/srv")  # host dirs to build on
_WORKDIR = "/tmp"  # inside the new root: the run's own tmpfs
_libc = ctypes.CDLL(None, use_errno=True)
_exit = os._exit


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    args = [s.encode() if s else None for s in (source, target, kind, data)]
    _check(
        _libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]), f"mount {target}"
    )


# ---- memory cgroup ------------------------------------------------------------------------


class Cgroup:
    """A memory cgroup for one run, nested under this process's own where possible.

    Held through directory descriptors, so it can be joined and removed after the worker
    has pivoted into the sandbox's root, where /sys is not mounted.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.placement, self.parent_fd, self.fd, self.events = "none", -1, -1, ""
        self.name = f"lai-sandbox-{os.getpid()}-{os.urandom(4).hex()}"
        for parent, placement, limit_file, events in self._candidates():
            try:
                os.mkdir(os.path.join(parent, self.name), 0o755)
            except OSError:
                continue
            try:
                with open(os.path.join(parent, self.name, limit_file), "w") as handle:
                    handle.write(str(limit_bytes))
                self.parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
                self.fd = os.open(os.path.join(parent, self.name), os.O_RDONLY | os.O_DIRECTORY)
                self.placement, self.events = placement, events
                return
            except OSError:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(parent, self.name))

    @staticmethod
    def _candidates() -> list[tuple[str, str, str, str]]:
        """(parent dir, "nested" | "root", limit file, events file): own cgroup first."""
        own_v1 = own_v2 = None
        with contextlib.suppress(OSError), open("/proc/self/cgroup") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if "memory" in controllers.split(","):
                    own_v1 = path
                elif controllers == "":
                    own_v2 = path
        found = []
        v1 = "/sys/fs/cgroup/memory"
        if own_v1 is not None and os.path.exists(f"{v1}/cgroup.procs"):
            if own_v1 != "/":
                found.append((v1 + own_v1, "nested", "memory.limit_in_bytes", "memory.oom_control"))
            found.append((v1, "root", "memory.limit_in_bytes", "memory.oom_control"))
        v2 = "/sys/fs/cgroup"
        if own_v2 is not None and os.path.exists(f"{v2}/cgroup.controllers"):
            if own_v2 != "/":  # its children get a memory controller only if it delegates one
                with (
                    contextlib.suppress(OSError),
                    open(f"{v2}{own_v2}/cgroup.subtree_control", "w") as h,
                ):
                    h.write("+memory")
                found.append((v2 + own_v2, "nested", "memory.max", "memory.events"))
            found.append((v2, "root", "memory.max", "memory.events"))
        return found

    def join_fd(self) -> int:
        """A descriptor on cgroup.procs; writing b"0" to it moves the writer in."""
        return os.open("cgroup.procs", os.O_WRONLY, dir_fd=self.fd) if self.fd >= 0 else -1

    def oom_killed(self) -> bool:
        if self.fd < 0:
            return False
        with contextlib.suppress(OSError):
            fd = os.open(self.events, os.O_RDONLY, dir_fd=self.fd)
            try:
                match = re.search(rb"^oom_kill (\d+)$", os.read(fd, 4096), re.M)
            finally:
                os.close(fd)
            return bool(match and int(match[1]) > 0)
        return False

    def remove(self) -> bool:
        """rmdir, once the last task has left (the kernel may lag a little); True if gone."""
        if self.fd < 0:
            return True
        delay = 0.0005
        for _ in range(60):  # about 2.5 s in all, then give up and say so
            try:
                os.rmdir(self.name, dir_fd=self.parent_fd)
                break
            except OSError:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        gone = not _exists(self.name, self.parent_fd)
        os.close(self.fd)
        os.close(self.parent_fd)
        self.fd = self.parent_fd = -1
        return gone


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False


# ---- the sandbox's root -------------------------------------------------------------------


def build_root(cfg: dict[str, Any], source: str) -> None:
    """Unshare namespaces and pivot into a fresh root holding only what a program needs."""
    _check(_libc.unshare(_CLONE), "unshare")
    _mount(None, "/", None, _REC | _PRIVATE)  # nothing below propagates back to the host
    binds = [d for d in (*_SYSTEM_DIRS, sys.base_prefix) if os.path.lexists(d)]
    binds = [d for d in binds if not any(d.startswith(o + "/") for o in binds if o != d)]
    new = next((m for m in _ROOT_MOUNTPOINTS if os.path.isdir(m) and not os.path.islink(m)
                and not any((d + "/").startswith(m + "/") for d in binds)), None)  # fmt: skip
    if new is None:
        raise OSError("no directory to build the sandbox's root on")
    _mount("tmpfs", new, "tmpfs", _NOSUID | _NODEV, "size=1m,nr_inodes=1024,mode=755")
    for path in binds:
        target = new + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin and the like
            os.symlink(os.readlink(path), target)
            continue
        os.mkdir(target)
        _mount(path, target, None, _BIND | _REC)
        _mount(None, target, None, _BIND | _REMOUNT | _RDONLY | _NOSUID | _NODEV)
    os.mkdir(new + "/dev")
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            os.close(os.open(f"{new}/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
            _mount(f"/dev/{name}", f"{new}/dev/{name}", None, _BIND)
    os.symlink(_WORKDIR, new + "/dev/shm")
    os.makedirs(new + "/var", exist_ok=True)
    if not os.path.lexists(new + "/var/tmp"):
        os.symlink(_WORKDIR, new + "/var/tmp")
    os.makedirs(new + _WORKDIR, exist_ok=True)
    uid = cfg["uid"]
    quota = f"size={cfg['disk_mb']}m,nr_inodes={cfg['max_files']},mode=700,uid={uid},gid={uid}"
    _mount("tmpfs", new + _WORKDIR, "tmpfs", _NOSUID | _NODEV, quota)
    _pivot(new)
    _mount(None, "/", None, _REMOUNT | _RDONLY | _NOSUID | _NODEV)
    program = os.path.join(_WORKDIR, "main.py")
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(source)
    os.chown(program, uid, uid)


def _pivot(new: str) -> None:
    """Make `new` the root and drop the host's tree from this namespace."""
    os.chdir(new)
    if _PIVOT_ROOT is not None and _libc.syscall(_PIVOT_ROOT, b".", b".") == 0:
        _check(_libc.umount2(b".", _DETACH), "umount old root")  # the old root sits on top
    else:  # an architecture whose syscall number we do not know: move + chroot
        _mount(new, "/", None, _MOVE)
        _check(_libc.chroot(b"."), "chroot")
    os.chdir("/")


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


def worker(cfg: dict[str, Any], out: int, err: int, ctl: socket.socket, code_fd: int) -> None:
    """Build one sandbox, run one program in it, clean up, report. Runs as a zygote child."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the zygote ignores it; we must wait
    isolate, started = cfg["isolate"], time.monotonic()
    cgroup = None
    try:
        source = os.pread(code_fd, os.fstat(code_fd).st_size, 0).decode("utf-8")
        os.close(code_fd)
        if isolate:
            cgroup = Cgroup(cfg["cgroup_bytes"])
            build_root(cfg, source)
        else:
            os.mkdir(cfg["workdir"], 0o700)
            with open(os.path.join(cfg["workdir"], "main.py"), "w", encoding="utf-8") as handle:
                handle.write(source)
    except Exception as exc:  # noqa: BLE001 - the sandbox's fault, reported as such
        if cgroup:
            cgroup.remove()
        if not isolate:
            remove_tree(cfg["workdir"])
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
        proof = os.read(proof_r, 64)
    oom = cgroup.oom_killed() if cgroup else False
    if isolate:  # inside our own mount namespace: the quota tmpfs goes before its cgroup
        _libc.umount2(_WORKDIR.encode(), _DETACH)
    removed = cgroup.remove() if cgroup else True
    if not isolate:
        removed = remove_tree(cfg["workdir"]) and removed
    if outcome != "gone":
        ctl.send(json.dumps({
            "kind": "done", "status": status, "outcome": outcome, "seconds": seconds,
            "proof": proof == secret, "oom": oom, "cleaned": removed,
            "cgroup": cgroup.placement if cgroup else "none", "setup_s": start - started,
        }).encode())  # fmt: skip


# ---- cleanup of a host directory (the fallback's run directory) ---------------------------


def remove_tree(path: str) -> bool:
    """Delete a directory tree without recursion and with a bounded number of descriptors.

    ``shutil.rmtree`` recurses, so a program that nests a few thousand directories makes
    it raise RecursionError. Here one descriptor walks down to a leaf, empties it, climbs
    back through ``..`` and removes it by name; paths never grow past one component, so
    depth (and PATH_MAX) do not matter. Returns whether the tree is gone.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError:
        return not os.path.lexists(path)
    names: list[str] = []  # the way down, one name per level
    try:
        for _ in range(10_000_000):  # a bound, not a limit anyone reaches
            with contextlib.suppress(OSError):
                os.chmod(fd, 0o700)
            subdir = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdir = subdir or entry.name
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.name, dir_fd=fd)
            if subdir is not None:
                try:
                    child = os.open(subdir, flags, dir_fd=fd)
                except OSError:  # cannot enter: try to remove it as it is, and go on
                    with contextlib.suppress(OSError):
                        os.rmdir(subdir, dir_fd=fd)
                    continue
                os.close(fd)
                fd = child
                names.append(subdir)
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            with contextlib.suppress(OSError):
                os.rmdir(names.pop(), dir_fd=fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)
    return not os.path.lexists(path)


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
