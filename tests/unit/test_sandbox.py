"""The sandbox must contain hostile programs: each attack runs in its own test.

Every test leaves no sandbox process behind, even when an assertion fails (see `reaper`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lai import sandbox
from lai.sandbox import check_program, run_many, run_program
from tests.helpers.sandbox import needs_isolation

REPO = Path(__file__).resolve().parents[2]
HUMANEVAL = REPO.parent / "shared" / "data" / "humaneval" / "test_sample.jsonl"
def sandbox_processes() -> list[tuple[int, str]]:
    """(pid, state) of every process, zombies included, running as a sandbox uid, not
    counting those that existed before the test (a zombie nobody reaps lives forever)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if int(fields["Uid"].split()[0]) in sandbox.SANDBOX_UIDS and int(entry) not in _before:
            found.append((int(entry), fields["State"]))
    return found


_before: set[int] = set()


@pytest.fixture(autouse=True)
def reaper() -> Iterator[None]:
    """Kill any sandbox process a failing test might have left behind."""
    _before.clear()
    _before.update(pid for pid, _ in sandbox_processes())
    yield
    for pid, _ in sandbox_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_correct_program_passes() -> None:
    result = run_program("def add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\nprint('ok')")
    assert (result.passed, result.status, result.reason) == (True, "passed", "passed")
    assert result.stdout == "ok\n"
    assert result.seconds > 0  # (no upper bound: a busy machine may take its time)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("def add(a, b):\n    return a - b\n\nassert add(1, 2) == 3, 'expected 3'",
         'failed: AssertionError: "expected 3"'),
        ("foo()", "failed: NameError: \"name 'foo' is not defined\""),
        ("def f(:\n    pass", 'failed: SyntaxError: "invalid syntax"'),
        ("import sys\nsys.exit(3)", "failed: exit code 3"),
    ],
)  # fmt: skip
def test_failure_reason_is_the_exception(code: str, reason: str) -> None:
    result = run_program(code)
    assert (result.passed, result.status, result.reason) == (False, "failed", reason)


def test_infinite_loop_times_out_and_leaves_no_process() -> None:
    # a child that leaves the process group must die too
    code = "import os\nif os.fork() == 0:\n    os.setsid()\nwhile True:\n    pass\n"
    result = run_program(code, timeout_s=0.5)  # it never ends: any timeout is waited in full
    assert (result.passed, result.status) == (False, "timeout")
    assert result.reason == "timed out after 0.5 s"
    assert sandbox_processes() == []  # not even zombies


def test_fork_bomb_is_contained() -> None:
    result = run_program("import os\nwhile True:\n    os.fork()\n", timeout_s=5)
    assert not result.passed
    assert sandbox_processes() == []
    assert subprocess.run(["true"], check=False).returncode == 0  # the machine still forks


def test_huge_allocation_fails_with_memory_error() -> None:
    result = run_program("x = bytearray(50 * 1024**3)")
    assert (result.passed, result.status) == (False, "failed")
    assert result.reason.startswith("failed: MemoryError")
    assert "memory" in result.reason.lower()


@needs_isolation
def test_memory_cgroup_caps_the_process_tree() -> None:
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if not (
        os.path.exists("/sys/fs/cgroup/memory/cgroup.procs")
        or (v2.exists() and "memory" in v2.read_text().split())
    ):
        pytest.skip("no memory cgroup controller here (neither v1 nor v2)")
    # three processes of 200 MB each stay under RLIMIT_AS but not under the tree's cap
    code = (
        "import os\npids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
        "        b = bytearray(200 * 2**20)\n        for i in range(0, len(b), 4096):\n"
        "            b[i] = 1\n        os._exit(0)\n    pids.append(pid)\n"
        "print([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids])\n"
    )
    result = run_program(code, memory_mb=256)
    assert -signal.SIGKILL in json.loads(result.stdout)
    assert sandbox_processes() == []


def test_huge_file_is_stopped_by_file_size_limit() -> None:
    code = (
        "import os\nprint(os.getcwd(), flush=True)\ntry:\n    with open('big', 'wb') as f:\n"
        "        for _ in range(10 * 1024):\n            f.write(b'x' * 2**20)\n"
        "finally:\n    print(os.path.getsize('big'))\n"
    )
    result = run_program(code, max_file_mb=16)
    workdir, size = result.stdout.split()
    assert (result.passed, result.status) == (False, "failed")
    assert result.reason.startswith('failed: OSError: "[Errno 27] File too large"')
    assert int(size) <= 16 * 2**20
    if sandbox.isolation_available():  # its own tmpfs, gone with its mount namespace
        assert workdir == "/tmp"
    else:
        assert not os.path.exists(workdir)  # the temporary directory is gone


@needs_isolation
def test_cannot_write_outside_its_directory() -> None:
    token = uuid.uuid4().hex
    system = Path("/usr") / f"SANDBOX_ESCAPE_{token}"
    targets = [REPO / f"SANDBOX_ESCAPE_{token}", Path.home() / f"SANDBOX_ESCAPE_{token}", system]
    host_tmp = Path("/tmp") / f"SANDBOX_ESCAPE_{token}"  # writable, but a private tmpfs
    code = (
        f"for path in {[str(p) for p in targets]!r}:\n    try:\n"
        "        open(path, 'w').write('escaped')\n        print('WROTE', path)\n"
        "    except OSError as exc:\n        print(type(exc).__name__, path)\n"
        f"open({str(host_tmp)!r}, 'w').write('private')\n"
    )
    try:
        result = run_program(code)
        assert result.passed, result.reason
        assert "WROTE" not in result.stdout
        outcomes = dict(line.split(" ", 1)[::-1] for line in result.stdout.splitlines())
        # /usr is mounted read-only (OSError: EROFS); the checkout and the home are not in
        # the sandbox's root at all (FileNotFoundError)
        assert outcomes[str(system)] in {"PermissionError", "OSError"}
        assert all(
            outcome in {"PermissionError", "OSError", "FileNotFoundError"}
            for outcome in outcomes.values()
        )
        assert not any(p.exists() for p in [*targets, host_tmp])
    finally:
        for path in [*targets, host_tmp]:
            path.unlink(missing_ok=True)


def test_no_network_even_to_localhost() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n"
        )
        result = run_program(code, timeout_s=5)
        assert (result.passed, result.status) == (False, "failed")
        assert "connected" not in result.stdout
        assert result.reason.startswith("failed: OSError")
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody knocked


def test_environment_secrets_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAI_TEST_SECRET", "s3cret")
    code = "import os\nprint(dict(os.environ))\n"
    if sandbox.isolation_available():  # also try every process's environment it can see
        code += (
            "procs = os.listdir('/proc') if os.path.isdir('/proc') else []\n"
            "for pid in filter(str.isdigit, procs):\n    try:\n"
            "        print(open(f'/proc/{pid}/environ').read())\n    except OSError:\n"
            "        pass\n"
        )
    result = run_program(code)
    assert result.passed, result.reason
    assert "PATH" in result.stdout
    assert "s3cret" not in result.stdout and "LAI_TEST_SECRET" not in result.stdout


@needs_isolation
def test_cannot_kill_its_parent() -> None:
    code = (
        "import os, signal\n"
        "for pid in (os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\n"
        f"os.kill({os.getpid()}, signal.SIGKILL)\n"  # our pid means nothing in its namespace
    )
    result = run_program(code)
    assert not result.passed
    assert result.reason.startswith("failed: ProcessLookupError")
    assert sandbox_processes() == []  # and we are still here to check


def test_printing_100_mb_is_truncated_and_parent_memory_bounded() -> None:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run_program("print('x' * 100_000_000)", max_output_bytes=1_000_000)
    assert (result.passed, result.status) == (False, "error")
    assert result.reason.startswith("output truncated")
    assert len(result.stdout) == 1_000_000
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_kb < 50_000
    assert sandbox_processes() == []


def test_run_many_is_parallel_and_keeps_order() -> None:
    # Each program prints when it started and ended: parallel means all four were running
    # at one moment, whatever the machine's load (a wall-clock bound would be a timed test).
    programs = [
        f"import time\nstart = time.time()\ntime.sleep(1)\nprint({i}, start, time.time())"
        for i in range(4)
    ]
    results = run_many(programs, workers=4, timeout_s=30)
    printed = [r.stdout.split() for r in results]
    assert [p[0] for p in printed] == ["0", "1", "2", "3"]
    starts, ends = [float(p[1]) for p in printed], [float(p[2]) for p in printed]
    assert max(starts) < min(ends), "the programs ran one after another"
    assert all(r.passed for r in results)
    assert run_many([]) == []


def test_check_program_layout() -> None:
    program = check_program("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", "f")
    assert program.endswith("\ncheck(f)\n")
    assert run_program(program).passed


def humaneval_rows() -> list[dict[str, str]]:
    if not HUMANEVAL.exists():
        pytest.skip(f"HumanEval sample not found at {HUMANEVAL}")
    return [json.loads(line) for line in HUMANEVAL.read_text().splitlines() if line.strip()]


def test_humaneval_canonical_solutions_all_pass() -> None:
    rows = humaneval_rows()
    programs = [
        check_program(r["prompt"] + r["canonical_solution"], r["test"], r["entry_point"])
        for r in rows
    ]
    results = run_many(programs, workers=2, timeout_s=10)
    failures = {r["task_id"]: res.reason for r, res in zip(rows, results, strict=True)}
    assert {k: v for k, v in failures.items() if v != "passed"} == {}


def test_humaneval_wrong_solution_fails() -> None:
    row = humaneval_rows()[0]
    result = run_program(check_program(row["prompt"] + "    return None\n", row["test"],
                                       row["entry_point"]))  # fmt: skip
    assert (result.passed, result.status) == (False, "failed")
    assert result.reason.startswith("failed:")
