"""The host-side pieces of a sandbox: its memory cgroup, its root, and removing a tree.

Imported by the zygote as a sibling file (standard library only, no lai), and by lai's
tests for :func:`remove_tree`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import sys
import time
from typing import Any

CLONE_FLAGS = 0x00020000 | 0x04000000 | 0x08000000 | 0x20000000 | 0x40000000  # NS UTS IPC PID NET
_RDONLY, _NOSUID, _NODEV, _REMOUNT = 1, 2, 4, 32
_BIND, _MOVE, _REC, _PRIVATE, DETACH = 4096, 8192, 16384, 1 << 18, 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}.get(platform.machine())
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_DEVICES = ("null", "zero", "full", "random", "urandom")
_ROOT_MOUNTPOINTS = ("/mnt", "/tmp", "/var/tmp", "/media", "/srv")  # host dirs to build on
WORKDIR = "/tmp"  # inside the new root: the run's own tmpfs
libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str = "") -> None:
    args = [s.encode() if s else None for s in (source, target, kind, data)]
    check(libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]), f"mount {target}")


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
    check(libc.unshare(CLONE_FLAGS), "unshare")
    _mount(None, "/", None, _REC | _PRIVATE)  # nothing below propagates back to the host
    binds = [d for d in (*_SYSTEM_DIRS, sys.base_prefix) if os.path.lexists(d)]
    binds = [d for d in binds if not any(d.startswith(o + "/") for o in binds if o != d)]
    new = next((m for m in _ROOT_MOUNTPOINTS if os.path.isdir(m) and not os.path.islink(m)
                and not any((d + "/").startswith(m + "/") for d in binds)), None)  # fmt: skip
    if new is None:
        raise OSError("no directory to build the sandbox's root on")
    _mount("tmpfs", new, "tmpfs", _NOSUID | _NODEV, "size=1m,nr_inodes=1024,mode=755")
    # The program's disk first, so that an interpreter living under /tmp is bound on top.
    os.makedirs(new + WORKDIR)
    uid = cfg["uid"]
    quota = f"size={cfg['disk_mb']}m,nr_inodes={cfg['max_files']},mode=700,uid={uid},gid={uid}"
    _mount("tmpfs", new + WORKDIR, "tmpfs", _NOSUID | _NODEV, quota)
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
    os.symlink(WORKDIR, new + "/dev/shm")
    os.makedirs(new + "/var", exist_ok=True)
    if not os.path.lexists(new + "/var/tmp"):
        os.symlink(WORKDIR, new + "/var/tmp")
    _pivot(new)
    _mount(None, "/", None, _REMOUNT | _RDONLY | _NOSUID | _NODEV)
    program = os.path.join(WORKDIR, "main.py")
    with open(program, "w", encoding="utf-8", errors="surrogatepass") as handle:
        handle.write(source)
    os.chown(program, uid, uid)


def _pivot(new: str) -> None:
    """Make `new` the root and drop the host's tree from this namespace."""
    os.chdir(new)
    if _PIVOT_ROOT is not None and libc.syscall(_PIVOT_ROOT, b".", b".") == 0:
        check(libc.umount2(b".", DETACH), "umount old root")  # the old root sits on top
    else:  # an architecture whose syscall number we do not know: move + chroot
        _mount(new, "/", None, _MOVE)
        check(libc.chroot(b"."), "chroot")
    os.chdir("/")


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
