"""A local server that dies is named, restarted once per stage, and stops the run the second time.

The server is tests/helpers/fake_vllm_server.py started through ``instructor.local.launcher``
(the same lifecycle code llama.cpp's server goes through), told to kill itself with SIGILL
on a chosen chat request: what a llama.cpp build for the wrong CPU does on the first long
prompt. Everything else (process group, readiness, the OpenAI client, the stage runner,
the pipeline, the CLI's one-line error) is real.
"""

from __future__ import annotations

import http.client
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lai.config import LocalInstructorConfig, build_config
from lai.errors import InstructorError
from lai.instructor.local_server import ALIAS, LocalInstructorServer, supervised
from lai.pipeline import Pipeline
from lai.processes import describe_exit, last_meaningful_line
from tests.unit.test_cli import assert_clean_error, fake, lai

REPO = Path(__file__).resolve().parents[2]
STAND_IN = REPO / "tests" / "helpers" / "fake_vllm_server.py"
#: The slow tier's rule: a test that starts a server process (here the vLLM stand-in, about
#: 0.5-2 s with its readiness wait and stop) runs in `make test`, not in the fast tier.
SERVER_PROCESS = pytest.mark.slow


def stand_in(*flags: str) -> LocalInstructorConfig:
    return LocalInstructorConfig(
        enabled=True, server="vllm", model="org/model", launcher=[sys.executable, str(STAND_IN)],
        extra_args=list(flags), startup_timeout_s=120,
    )  # fmt: skip


def chat(server: LocalInstructorServer) -> None:
    body = b'{"model": "local-instructor", "messages": [{"role": "user", "content": "hi"}]}'
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        reply.read()


def test_exit_statuses_in_words() -> None:
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-signal.SIGILL).startswith("killed by SIGILL (illegal instruction")
    assert describe_exit(-signal.SIGKILL).startswith("killed by SIGKILL (killed: often the kernel's out-of-memory killer")


def test_last_meaningful_line_skips_access_logs(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "llama_model_loader: loaded meta data\nGGML_ASSERT(n > 0) failed\n\n"
        'INFO:     127.0.0.1:50112 - "GET /v1/models HTTP/1.1" 200 OK\n'
        '127.0.0.1 - - [01/Dec/2026 01:02:03] "POST /v1/chat/completions HTTP/1.1" 200 -\n'
    )
    assert last_meaningful_line(log) == "GGML_ASSERT(n > 0) failed"
    assert last_meaningful_line(tmp_path / "missing.log") == ""


@SERVER_PROCESS
def test_a_dead_server_is_named_restarted_once_then_stops_the_work(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with LocalInstructorServer(stand_in("--crash-on", "1"), log) as server:
        assert server.death() is None
        first_pid = server.process.pid if server.process else 0
        calls: list[int] = []

        def work() -> str:
            calls.append(server.process.pid if server.process else 0)
            try:
                chat(server)
            except (OSError, http.client.HTTPException) as error:
                raise InstructorError(f"lost the instructor endpoint {server.base_url} ({error})") from None
            return "done"

        with pytest.raises(InstructorError) as raised:
            supervised(server, work)
        message = str(raised.value)
        # How it died and what its log said last, not "endpoint unreachable".
        assert "killed by SIGILL (illegal instruction" in message and "died again after a restart" in message
        assert str(log) in message and "about to die of SIGILL on chat request 1" in message
        assert len(calls) == 2 and calls[0] == first_pid and calls[1] != first_pid, "restarted exactly once"
        assert server.process is None, "the dead server is cleaned up"


@SERVER_PROCESS
def test_a_server_that_dies_once_is_restarted_and_the_work_finishes(tmp_path: Path) -> None:
    flag = tmp_path / "crashed-once"
    with LocalInstructorServer(stand_in("--crash-on", "1", "--crash-once", str(flag)), tmp_path / "server.log") as server:
        calls = 0

        def work() -> str:
            nonlocal calls
            calls += 1
            try:
                chat(server)
            except (OSError, http.client.HTTPException) as error:
                raise InstructorError(f"lost the instructor endpoint ({error})") from None
            return "served"

        assert supervised(server, work) == "served"
        assert calls == 2 and flag.exists() and server.restarts == 1 and server.death() is None


@SERVER_PROCESS
def test_an_error_while_the_server_lives_is_passed_on_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalInstructorServer(stand_in(), tmp_path / "server.log") as server:
        # supervised() gives a server that may be dying a few seconds to go; this one lives,
        # so the whole grace would be waited out. Asked for, then cut to a moment.
        graces: list[float] = []
        real_death = server.death

        def death(wait_s: float = 0.0) -> str | None:
            graces.append(wait_s)
            return real_death(wait_s=min(wait_s, 0.3))

        monkeypatch.setattr(server, "death", death)

        def work() -> None:
            raise InstructorError("HTTP 401 from the endpoint")

        with pytest.raises(InstructorError, match="^HTTP 401 from the endpoint$"):
            supervised(server, work)
        assert server.restarts == 0
        assert graces and graces[0] > 0, "the server was given a moment to die before the error was judged"


def local_run(tmp_path: Path, data_dir: Path, *flags: str) -> dict[str, Any]:
    return {
        "name": "local",
        "seed": 3,
        "iterations": 1,
        "data_dir": str(data_dir),
        "target": {"backend": "scripted", "model": "fake-model", "batch_size": 4},
        "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 8}]},
        "instructor": {
            "backend": "openai", "model": ALIAS, "concurrency": 1, "max_retries": 1, "backoff_base_s": 0.1,
            "backoff_max_s": 0.2, "local": stand_in(*flags).model_dump(),
        },
        "strategy": {"name": "le", "budget": 8, "embedder": "hashing"},
        "train": {"backend": "noop"},
        "evaluate": {"baseline": False, "benchmarks": [{"task": "gsm8k", "pool": "test", "limit": 4}]},
    }  # fmt: skip


@SERVER_PROCESS
def test_the_pipeline_restarts_a_crashed_local_server_and_finishes_the_stage(data_dir: Path, tmp_path: Path) -> None:
    flag = tmp_path / "crashed-once"
    config = build_config(local_run(tmp_path, data_dir, "--crash-on", "2", "--crash-once", str(flag)))
    Pipeline(config, tmp_path / "run").run()
    assert flag.exists(), "the server did crash"
    instruct = (tmp_path / "run" / "iter_01" / "instruct.jsonl").read_text().splitlines()
    assert instruct and all('"status": "ok"' in line for line in instruct), "every request answered after the restart"
    log = (tmp_path / "run" / "logs" / "instructor_server.log").read_text()
    assert log.count("stand-in vLLM server for org/model") == 2


@SERVER_PROCESS
def test_the_same_crash_twice_is_one_line_naming_the_signal_and_the_log(data_dir: Path, tmp_path: Path) -> None:
    import yaml

    path = fake(tmp_path, data_dir)
    config = {**yaml.safe_load(path.read_text()), **local_run(tmp_path, data_dir, "--crash-on", "1")}
    path.write_text(yaml.safe_dump(config))
    result = lai("run", str(path), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(result, "killed by SIGILL", "instructor_server.log", "died again after a restart")
