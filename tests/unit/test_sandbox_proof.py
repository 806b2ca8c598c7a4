"""A pass needs proof that the program ran to its end: every early exit is a failure.

Each program below ends with tests that fail (``assert candidate(1) == 2``) and tries,
before they run, to be scored "passed" anyway. The old sandbox (verdict = exit status 0)
scored 22 of the first 29 programs **passed** (measured 2026-12-01 against the previous
``sandbox.py``): every route that reaches exit status 0 (sys.exit, SystemExit, os._exit,
exit(256), excepthook, atexit, threads, a signal handler, exec of another binary, closed
descriptors, killing the parent, a fork whose parent leaves first, fake proof text, the
done event, frame walking, ctypes, gc). The other seven it failed or errored for other
reasons (SIGABRT and SIGINT were "error"; a __del__ SystemExit is ignored by Python; a
settrace loop timed out; the harness-specific ones had no harness to attack). Now all are
"failed". Two attacks on the harness itself were found while writing these and each
passed on a version of it (checked by running the test against it): walking the frames
to the runner's locals (the secret was still in a loop variable), and a signal handler
that fires while the audit hook runs and reads its closure. The secret now lives only as
a constant of a code object the hook guards.
"""

from __future__ import annotations

import pytest

from lai.sandbox import check_program, run_program
from tests.helpers.sandbox import needs_isolation, stop_zygotes  # noqa: F401 - stop_zygotes is an autouse fixture

FAILING_TESTS = "\n\ndef check(candidate):\n    assert candidate(1) == 2, 'the tests ran'\n"

EARLY_EXITS = {
    "sys.exit(0) at module level": "import sys\nsys.exit(0)\n",
    "raise SystemExit at module level": "raise SystemExit\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "exit status 256 (0 to the shell)": "import sys\nsys.exit(256)\n",
    "os.abort is not a pass": "import os\nos.abort()\n",
    "excepthook exits 0": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    "atexit exits 0": "import atexit, os\natexit.register(os._exit, 0)\n",
    "SystemExit raised in __del__": (
        "import sys\nclass Bye:\n    def __del__(self):\n        sys.exit(0)\nBye()\n"
    ),
    "a thread exits 0 while the tests run": (
        "import os, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.05), os._exit(0))).start()\n"
        "time.sleep(5)\n"
    ),
    "a thread races the failing tests": (
        "import os, threading\nthreading.Thread(target=os._exit, args=(0,)).start()\n"
    ),
    "signal handler exits 0": (
        "import os, signal, time\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.01)\ntime.sleep(5)\n"
    ),
    "SIGINT to itself": "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n",
    "exec another program": "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'pass'])\n",
    "exec /bin/true": "import os\nos.execv('/bin/true', ['true'])\n",
    "close every descriptor, then exit 0": ("import os\nos.closerange(0, 1024)\nos._exit(0)\n"),
    "kill the parent and init": (
        "import os, signal\nfor pid in (os.getppid(), 1, -1):\n    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\nos._exit(0)\n"
    ),
    "fork: the parent exits 0, the child runs the tests": (
        "import os, time\nif os.fork() != 0:\n    os._exit(0)\n"
    ),
    "fork: the child exits 0 first": "import os\nif os.fork() == 0:\n    os._exit(0)\n",
}

FORGERIES = {
    "fake proof on every descriptor": (
        "import os\nfor fd in range(256):\n    try:\n"
        "        os.write(fd, b'passed' * 8)\n    except OSError:\n        pass\nos._exit(0)\n"
    ),
    "dup stdout onto every descriptor": (
        "import os\nfor fd in range(3, 64):\n    os.dup2(1, fd)\nprint('passed')\nos._exit(0)\n"
    ),
    "fake verdict text on stdout and stderr": (
        "import sys, os\nprint('passed')\n"
        "sys.stderr.write('sandbox setup failed: nothing ran\\n')\nsys.stderr.flush()\n"
        "os._exit(0)\n"
    ),
    "raise the done event itself": ("import sys, os\nsys.audit('lai.sandbox.done')\nos._exit(0)\n"),
    "run the harness again on a pass": (
        "import os, sys\nharness = sys.modules['harness']\nr, w = os.pipe()\n"
        "os.write(w, b'x' * 16)\nharness.run('pass', '/tmp/other.py', r, 4, 1000)\n"
    ),
    "rebind the harness's names": (
        "import os, sys\nh = sys.modules['harness']\n"
        "h.DONE_EVENT = 'open'\nh.FORBIDDEN = frozenset()\nh._exit = lambda code: None\n"
        "h._audit('open')\nopen('/dev/null')\nos._exit(0)\n"
    ),
    "read the runner's frames for the secret": (  # the first 16 bytes found, to the proof fd
        "import os, sys\nfound = []\nf = sys._getframe()\nwhile f is not None:\n"
        "    values = list(f.f_locals.values())\n"
        "    for v in list(values):\n        for cell in getattr(v, '__closure__', None) or ():\n"
        "            values.append(cell.cell_contents)\n"
        "    found += [v for v in values if isinstance(v, bytes) and len(v) == 16]\n"
        "    f = f.f_back\nif found:\n    os.write(4, found[0])\nos._exit(0)\n"
    ),
    "a signal handler catches the audit hook mid-call": (  # and reads what its frame holds
        "import os, signal, sys, time\n"
        "busy = False\n"
        "found = []\n"
        "def handler(signum, frame):\n"
        "    global busy\n"
        "    if busy:\n"
        "        return\n"
        "    busy = True\n"
        "    f = frame\n"
        "    while f is not None:\n"
        "        values = list(f.f_locals.values())\n"
        "        for v in list(values):\n"
        "            for cell in getattr(v, '__closure__', None) or ():\n"
        "                values.append(cell.cell_contents)\n"
        "            if isinstance(v, list):\n"
        "                values.extend(v)\n"
        "        found.extend(v for v in values if isinstance(v, bytes) and len(v) == 16)\n"
        "        f = f.f_back\n"
        "    if found:\n"
        "        signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "        try:\n"
        "            os.write(4, found[0])\n"
        "        except OSError:\n"
        "            pass\n"
        "        os._exit(0)\n"
        "    busy = False\n"
        "signal.signal(signal.SIGALRM, handler)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)\n"
        "end = time.monotonic() + 3\n"
        "n = 0\n"
        "while time.monotonic() < end:\n"
        "    sys._getframe()\n"
        "    n += 1\n"
        "signal.setitimer(signal.ITIMER_REAL, 0)\n"
        'print("not found", n)\n'
    ),
    "read the proof function's constants from the hook's frame": (
        "import os, signal, sys, time\nbusy = False\n"
        "def handler(signum, frame):\n    global busy\n    if busy or 'proof' not in frame.f_locals:\n"
        "        return\n    busy = True\n    signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "    consts = frame.f_locals['proof'].__code__.co_consts\n"
        "    for c in consts:\n        if isinstance(c, bytes) and len(c) == 16:\n"
        "            os.write(4, c)\n            os._exit(0)\n"
        "signal.signal(signal.SIGALRM, handler)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)\nend = time.monotonic() + 3\n"
        "while time.monotonic() < end:\n    sys._getframe()\n"
        "signal.setitimer(signal.ITIMER_REAL, 0)\n"
    ),
    "build a function around the harness's code": (
        "import types\ntypes.FunctionType((lambda: b'x').__code__, {})\nimport os\nos._exit(0)\n"
    ),
    "crafted bytecode through marshal": (
        "import marshal\ncode = marshal.loads(marshal.dumps(compile('x = 1', 'x', 'exec')))\n"
        "import os\nos._exit(0)\n"
    ),
    "a .pyc put on sys.path": (
        "import py_compile, sys\nopen('/tmp/evil.py', 'w').write('X = 1')\n"
        "py_compile.compile('/tmp/evil.py', cfile='/tmp/lib/evil.pyc')\n"
        "sys.path.insert(0, '/tmp/lib')\nimport evil\nimport os\nos._exit(0)\n"
    ),
    "a patched loader reading bytecode": (
        "import sys\nloaders = sys.modules['_frozen_importlib_external']\n"
        "real = loaders.FileLoader.get_data\n"
        "loaders.FileLoader.get_data = lambda self, path: real(self, path)\n"
        "import fractions\nimport os\nos._exit(0)\n"
    ),
    "settrace to jump over the failing assert": (
        "import sys\ndef tracer(frame, event, arg):\n"
        "    if event == 'line' and frame.f_code.co_name == 'check':\n"
        "        frame.f_lineno = frame.f_code.co_firstlineno\n    return tracer\n"
        "sys.settrace(tracer)\n"
    ),
    "ctypes to read memory": (
        "import ctypes\nctypes.string_at(id(object()), 16)\nimport os\nos._exit(0)\n"
    ),
    "gc to find the hook": "import gc, os\ngc.get_objects()\nos._exit(0)\n",
    "patch os._exit and sys.exit to write proof": (
        "import os, sys\nreal = os._exit\n"
        "def fake(code=0):\n    for fd in range(3, 64):\n        try:\n"
        "            os.write(fd, b'0' * 16)\n        except OSError:\n            pass\n"
        "    real(0)\nos._exit = sys.exit = fake\n"
    ),
}


@pytest.mark.parametrize("cheat", list(EARLY_EXITS), ids=list(EARLY_EXITS))
def test_early_exit_is_never_a_pass(cheat: str) -> None:
    program = check_program("def f(x):\n    return x\n\n" + EARLY_EXITS[cheat], FAILING_TESTS, "f")
    result = run_program(program, timeout_s=20)
    assert not result.passed, cheat
    assert result.status in {"failed", "timeout"}, result.reason


@needs_isolation
@pytest.mark.parametrize("cheat", list(FORGERIES), ids=list(FORGERIES))
def test_forged_proof_is_never_a_pass(cheat: str) -> None:
    program = check_program("def f(x):\n    return x\n\n" + FORGERIES[cheat], FAILING_TESTS, "f")
    result = run_program(program, timeout_s=20)
    assert not result.passed, (cheat, result.reason, result.stderr[-500:])
    assert result.status == "failed", result.reason


def test_exit_zero_before_the_end_says_so() -> None:
    result = run_program("import sys\nsys.exit(0)\nassert False")
    assert result.reason == "failed: exited before the tests finished (exit code 0)"


@needs_isolation
def test_forbidden_introspection_is_named() -> None:
    result = run_program("import sys\nsys.settrace(lambda *a: None)\n")
    assert result.status == "failed"
    assert "sys.settrace is not allowed" in result.reason


LEGITIMATE = {
    "namedtuple, enum, dataclass, typing": (
        "from collections import namedtuple\nfrom dataclasses import dataclass\n"
        "import enum, typing\nP = namedtuple('P', 'x y')\nclass C(enum.Enum):\n    A = 1\n"
        "@dataclass\nclass D:\n    x: int\nT = typing.TypeVar('T')\n"
        "assert P(1, 2).y == 2 and C.A.value == 1 and D(3).x == 3\n"
    ),
    "a handled exception and its traceback": (
        "import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    text = traceback.format_exc()\nassert 'ZeroDivisionError' in text\n"
    ),
    "threads that finish": (
        "import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) "
        "for i in range(4)]\nfor t in ts:\n    t.start()\nfor t in ts:\n    t.join()\n"
        "assert sorted(out) == [0, 1, 2, 3]\n"
    ),
    "a subprocess of the same interpreter": (
        "import subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, "
        "text=True, check=True).stdout\nassert out.strip() == '42', out\n"
    ),
    "deep but bounded recursion": (
        "import sys\nsys.setrecursionlimit(20000)\ndef depth(n):\n    return 0 if n == 0 "
        "else 1 + depth(n - 1)\nassert depth(15000) == 15000\n"
    ),
    "a fork whose child runs on to the end too": (
        "import os\npid = os.fork()\nassert 1 + 1 == 2\nif pid:\n    os.waitpid(pid, 0)\n"
    ),
    "the standard library's own imports, asyncio included": (
        "import asyncio, json, fractions, decimal, email.message, unittest, multiprocessing\n"
        "import sqlite3, statistics, typing, dataclasses, inspect\n"
        "async def main():\n    await asyncio.sleep(0)\n    return 3\n"
        "assert asyncio.run(main()) == 3\n"
    ),
    "files in its own directory": (
        "import os, tempfile\nwith open('data.txt', 'w') as f:\n    f.write('x')\n"
        "with tempfile.TemporaryDirectory() as d:\n    open(os.path.join(d, 'y'), 'w').close()\n"
        "assert open('data.txt').read() == 'x'\n"
    ),
}


@pytest.mark.parametrize("name", list(LEGITIMATE), ids=str)
def test_ordinary_programs_still_pass(name: str) -> None:
    result = run_program(LEGITIMATE[name], timeout_s=30)
    assert result.passed, (result.reason, result.stderr[-800:])
