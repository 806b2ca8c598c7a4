"""``lai ARGS`` as a forked child of the test process, for tests about what a run writes.

The child is a real process with its own working folder, environment, stdout and stderr
files and exit status, running the real ``lai.cli.main``; only the interpreter start and
the imports (about 1 s of every fresh ``python -m lai.cli run``: the OpenAI client,
matplotlib, pydantic models) are shared with the test process. tests/unit/test_bad_inputs.py
runs its table the same way. Tests about the command itself starting (tests/unit/test_cli.py)
keep a fresh interpreter.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path


def start_forked(
    args: list[str], cwd: Path, streams: Path, env: dict[str, str] | None = None, before: Callable[[], None] | None = None
) -> int:
    """Fork a child that runs ``lai ARGS`` in ``cwd`` with ``env`` added to the environment,
    its stdout and stderr in ``streams/stdout`` and ``streams/stderr``; ``before`` runs in
    the child first (to fake a fault). Returns the child's pid: wait for it by that pid
    (``os.wait`` would reap processes other tests started)."""
    pid = os.fork()
    if pid:
        return pid
    code = 70  # the child: never returns
    try:
        os.chdir(cwd)
        os.environ.update({"COLUMNS": "400", **(env or {})})
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(streams / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115 - the child ends with os._exit
        sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
        sys.argv = ["lai", *args]
        logging.root.handlers.clear()  # pytest's capture handlers: the CLI installs its own, as in a shell
        if before is not None:
            before()
        from lai.cli import main

        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported through stderr and the exit status
        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def exit_code(pid: int) -> int:
    """Wait for the forked child ``pid``; its exit status (negative: killed by that signal)."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def lai_forked(
    *args: str, cwd: Path, env: dict[str, str] | None = None, before: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``lai ARGS`` in a forked child (:func:`start_forked`) and wait for it. Returns
    what subprocess.run would."""
    with tempfile.TemporaryDirectory(prefix="lai-forked-") as folder:
        streams = Path(folder)
        returncode = exit_code(start_forked(list(args), cwd, streams, env, before))
        stdout, stderr = (streams / "stdout").read_text(errors="replace"), (streams / "stderr").read_text(errors="replace")
    return subprocess.CompletedProcess(["lai", *args], returncode, stdout, stderr)
