"""Runs inside the sandboxed process: the program, then the proof that it ran to its end.

Loaded by the zygote (never by lai itself), so it imports only the standard library.

The verdict "passed" needs more than exit status 0, which a program can produce at any
moment (``sys.exit(0)`` at module level, ``os._exit(0)`` from a hook, ``os.execv`` into
``true``...). After the program's module body has returned normally, :func:`run` raises
the audit event ``lai.sandbox.done``; the audit hook armed just before the program
started answers it by writing a per-run secret to the proof pipe (descriptor 4), whose
other end the zygote's worker reads and compares with the secret it sent. The worker
makes the secret after forking, so no frame on the program's stack ever held it.

The program shares this interpreter, so the design assumes it can read any frame (through
``sys._getframe``, tracebacks, or a signal handler that fires inside the hook) and rebind
any module name. Hence:

* the secret exists only as a constant of a private function, ``proof``, which hands it
  out once, and only to a frame running the hook's own code called straight from the
  runner's frame; the hook refuses ``proof.__code__`` and the ``f_code`` of its frame;
* the hook accepts the done event only from the runner's frame; it is held by nothing the
  program can reach (audit hooks have no Python-level accessor; gc lists are refused);
* the runner calls only locals it captured before the program ran;
* the routes to raw memory or to rewriting running code are refused: tracing and
  profiling (a trace function could also jump over asserts), ctypes, the gc's object
  lists, other threads' frames, building code or function objects by hand, unmarshalling
  bytecode other than the installation's own ``.pyc`` files; the sandbox has no procfs,
  so no ``/proc/self/mem`` either.

A refused event ends the process with status 1 and a line on stderr. What remains is
listed in :mod:`lai.sandbox`'s docstring.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NoReturn

DONE_EVENT = "lai.sandbox.done"
SECRET_BYTES = 16
# Events the hook refuses (the process exits with status 1 and a line on stderr).
FORBIDDEN = frozenset({
    "sys.settrace", "sys.setprofile", "sys._current_frames", "gc.get_objects",
    "gc.get_referrers", "gc.get_referents", "code.__new__", "function.__new__",
})  # fmt: skip
FORBIDDEN_PREFIXES = ("ctypes.",)
TRACEBACK_FRAMES = 50  # the traceback of a deep recursion is cut to its last frames

# Captured at import, before any program runs: rebinding os.write or os._exit in the
# program's namespace does not change what the harness calls.
_write, _exit, _read, _close, _getframe, _audit = (
    os.write,
    os._exit,
    os.read,
    os.close,
    sys._getframe,
    sys.audit,
)


def _read_secret(fd: int) -> bytes:
    secret = b""
    while len(secret) < SECRET_BYTES and (chunk := _read(fd, SECRET_BYTES)):
        secret += chunk
    _close(fd)
    return secret


def _bytecode_check() -> Callable[[types.FrameType], bool]:
    """Whether a ``marshal.loads`` comes from importing the interpreter's own ``.pyc``.

    Bytecode is not verified by CPython: crafted bytecode reads and writes memory like
    ctypes, and would find the secret. So unmarshalling is allowed only inside importlib's
    own ``get_code`` of an unmodified file loader, reading a path inside the (read-only)
    installation; ``marshal.loads`` called by the program, a ``.pyc`` put on sys.path or a
    zip archive of them, a patched loader or ``_io.open_code``, are refused. Every piece
    checked is captured here, before the program runs, and compared by identity.
    """
    ext = sys.modules["_frozen_importlib_external"]
    compile_code = ext._compile_bytecode.__code__
    get_codes = (ext.SourceLoader.get_code.__code__, ext.SourcelessFileLoader.get_code.__code__)
    loaders = (ext.SourceFileLoader, ext.SourcelessFileLoader)
    get_data, io_module, open_code = ext.FileLoader.get_data, ext._io, ext._io.open_code
    prefix = os.path.realpath(sys.base_prefix) + "/"

    def trusted(frame: types.FrameType) -> bool:
        caller = frame.f_back
        if frame.f_code is not compile_code or caller is None:
            return False
        if not any(caller.f_code is code for code in get_codes):
            return False
        path, loader = frame.f_locals.get("bytecode_path"), caller.f_locals.get("self")
        return (
            type(path) is str
            and path.startswith(prefix)
            and not any(part in ("", ".", "..") for part in path.split("/")[1:])
            and type(loader) in loaders
            and "get_data" not in vars(loader)
            and type(loader).get_data is get_data
            and ext._io is io_module
            and io_module.open_code is open_code
        )

    return trusted


def _arm(secret_fd: int, proof_fd: int) -> None:
    """Install the audit hook that alone can emit the proof, for the caller's frame only.

    Where the secret lives matters: anything a frame can reach is the program's too,
    because a signal handler that fires while the hook runs receives the hook's frame.
    So the secret is a constant of a private code object (``proof``) and nothing else:
    reading it takes ``proof.__code__`` or the ``f_code`` of proof's frame, both refused
    by the hook, and calling ``proof`` yields it only to the hook called by the runner.
    It is read here, not in :func:`run`, whose frame stays on the program's stack.
    """
    runner = _getframe(1)
    scope: dict[str, Any] = {"__builtins__": {}, "getframe": _getframe, "runner": runner}
    scope["used"] = []
    source = (
        "def proof():\n"
        "    caller = getframe(1)\n"
        "    if used or caller.f_code is not hook_code or caller.f_back is not runner:\n"
        "        return b''\n"
        "    used.append(True)\n"
        f"    return {_read_secret(secret_fd)!r}\n"
    )
    exec(compile(source, "<lai proof>", "exec"), scope)  # noqa: S102 - our own text
    del source
    proof = scope["proof"]
    # Locals, not module globals: the program can rebind this module's names, not these.
    done, forbidden, prefixes, write, exit_, getframe, frame_type = (
        DONE_EVENT,
        FORBIDDEN,
        FORBIDDEN_PREFIXES,
        _write,
        _exit,
        _getframe,
        types.FrameType,
    )
    bytecode_trusted = _bytecode_check()
    # The one code object the standard library builds at run time: types.coroutine (used by
    # asyncio at import) sets a flag on a function's own code, its bytecode unchanged.
    coroutine_code = types.coroutine.__code__

    def hook(event: str, args: tuple[Any, ...]) -> None:
        try:  # this frame must never end in a traceback the program could walk
            if event == done:
                if getframe(1) is runner:
                    write(proof_fd, proof())
                return
            if event == "object.__getattr__":
                target, name = args[0], args[1]
                if not (
                    (name == "__code__" and target is proof)
                    or (
                        name == "f_code"
                        and type(target) is frame_type
                        and target.f_globals is scope
                    )
                ):
                    return
                event = f"reading the harness's code ({name})"
            elif event == "code.__new__" and getframe(1).f_code is coroutine_code:
                return
            elif event in ("marshal.loads", "marshal.load"):
                if bytecode_trusted(getframe(1)):
                    return
                event += " outside an import of the installation's own files"
            elif not (event in forbidden or event.startswith(prefixes)):
                return
            write(2, f"sandbox: {event} is not allowed here\n".encode())
            exit_(1)
        except BaseException:  # noqa: BLE001 - any failure in here ends the process
            exit_(1)

    scope["hook_code"] = hook.__code__
    sys.addaudithook(hook)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[_write(fd, data) :]
        except OSError:  # the program closed or broke its stderr: nothing to tell
            return


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):  # a program may have replaced the streams
            stream.flush()


def _cap_recursion(cap: int) -> None:
    """Python 3.11 keeps Python frames on the heap, so a program that raises the recursion
    limit to 10**9 recurses for tens of seconds until memory runs out and is reported as
    a timeout; capped, it fails fast with RecursionError."""
    real = sys.setrecursionlimit

    def setrecursionlimit(limit: int) -> None:
        real(min(limit, cap) if isinstance(limit, int) else limit)

    sys.setrecursionlimit = setrecursionlimit


def run(source: str, path: str, secret_fd: int, proof_fd: int, recursion_cap: int) -> NoReturn:
    """Run the program as ``__main__``; prove a normal end; never return."""
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__ = path, builtins  # type: ignore[attr-defined]
    sys.modules["__main__"], sys.argv = main, [path]
    _cap_recursion(recursion_cap)
    if "random" in sys.modules:  # a forked interpreter would share its parent's sequence
        sys.modules["random"].seed()
    # Everything the runner calls once the program runs is a local: the program can rebind
    # this module's names (through any frame's f_globals) but not another frame's locals.
    exit_, flush, audit, write_all, format_exception = (
        _exit,
        _flush,
        _audit,
        _write_all,
        traceback.format_exception,
    )
    _arm(secret_fd, proof_fd)  # from here on only the hook can emit the secret
    try:
        exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)  # noqa: S102
    except SystemExit as exc:  # sys.exit() before the end: Python's exit status, no proof
        flush()
        code = exc.code
        if code is not None and not isinstance(code, int):
            write_all(2, f"{code}\n".encode(errors="replace"))
        exit_(0 if code is None else code & 0xFF if isinstance(code, int) else 1)
    except BaseException as exc:  # noqa: BLE001 - printed as Python would, minus our frame
        flush()
        try:
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            lines = format_exception(type(exc), exc, tb, limit=-TRACEBACK_FRAMES)
            text = "".join(lines)
        except BaseException:  # noqa: BLE001 - e.g. an exception whose __str__ raises
            text = f"{type(exc).__name__}: <unprintable>\n"
        write_all(2, text.encode(errors="replace"))
        exit_(1)
    else:
        audit(DONE_EVENT)  # the hook checks that this very frame is asking
        flush()
        exit_(0)
