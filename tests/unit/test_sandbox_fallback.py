"""The weak fallback (not root, or no namespaces) keeps the proof and the cleanup.

Forced here by pretending isolation is unavailable, so it runs on every machine. The
programs are benign: in this mode they run as the test's own user, on the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lai import sandbox
from lai.sandbox import run_many, run_program
from tests.helpers.sandbox import stop_zygotes  # noqa: F401 - stop_zygotes is an autouse fixture


@pytest.fixture(autouse=True)
def fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sandbox, "isolation_available", lambda: False)
    before = set(Path("/tmp").glob("lai-sandbox-*"))
    yield
    assert set(Path("/tmp").glob("lai-sandbox-*")) <= before  # every run directory is gone


def test_pass_needs_the_end_of_the_program() -> None:
    results = run_many(["assert 1 + 1 == 2", "import sys\nsys.exit(0)\nassert False",
                        "import os\nos._exit(0)\nassert False"])  # fmt: skip
    assert [r.status for r in results] == ["passed", "failed", "failed"]
    assert results[1].reason == "failed: exited before the tests finished (exit code 0)"


def test_runs_in_a_temporary_directory_with_an_empty_environment() -> None:
    result = run_program("import os\nprint(os.getcwd())\nprint(sorted(os.environ))")
    cwd, env = result.stdout.splitlines()
    assert result.passed and Path(cwd).name.startswith("lai-sandbox-")
    assert env == "['HOME', 'LANG', 'PATH']"


def test_deep_tree_is_removed() -> None:
    """shutil.rmtree raised RecursionError on this (and left the directory behind)."""
    code = "import os\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\nprint('ok')\n"
    result = run_program(code, timeout_s=60)
    assert result.passed, result.reason


def test_timeout_kills_the_process_group() -> None:
    result = run_program("import os\nos.fork()\nwhile True:\n    pass\n", timeout_s=0.5)  # never ends
    assert result.status == "timeout"


def test_no_sockets() -> None:
    result = run_program("import socket\nsocket.socket()")
    assert result.status == "failed" and "network access is disabled" in result.reason
