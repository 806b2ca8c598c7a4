"""The OpenAI-compatible instructor against a real (scripted) HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from lai.errors import InstructorError
from lai.instructor.async_client import AsyncOpenAIInstructor as OpenAIInstructor
from lai.instructor.base import InstructRequest
from lai.instructor.runner import run_requests
from lai.records import InstructRecord
from lai.store import read_records
from tests.helpers.openai_server import Behaviour, ScriptedOpenAIServer

SCHEMA = {"type": "object", "properties": {"samples": {"type": "array"}}}


def request(i: int = 0) -> InstructRequest:
    return InstructRequest(
        id=f"le:gsm8k/train/{i}", source_ids=[f"gsm8k/train/{i}"], task="gsm8k", strategy="le",
        n_requested=2, messages=[{"role": "user", "content": f"help {i}"}], schema=SCHEMA,
    )  # fmt: skip


def client(server: ScriptedOpenAIServer, **kw: object) -> OpenAIInstructor:
    settings = {"base_url": server.base_url, "model": "teacher", "max_retries": 0, "timeout_s": 5} | kw
    return OpenAIInstructor(**settings)  # type: ignore[arg-type]


GOOD_REPLY = '{"samples": [{"question": "Tom has 3 pens and buys 2. How many?", "solution": "3+2=5", "answer": 5}]}'


def test_reply_tokens_and_structured_output_request() -> None:
    with ScriptedOpenAIServer(Behaviour(reply=GOOD_REPLY)) as server:
        instructor = client(server, structured_output="json_object", seed=3, temperature=0.2)
        instructor.check()
        record = instructor.complete(request())
    assert record.status == "ok" and record.reply == GOOD_REPLY
    assert (record.prompt_tokens, record.completion_tokens) == (11, 7)
    assert len(server.requests) == 1  # a reply with samples needs no corrective retry
    sent = server.requests[0]
    assert sent["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert sent["seed"] == 3 and sent["temperature"] == 0.2 and sent["model"] == "teacher"


def test_json_schema_mode_wraps_the_schema() -> None:
    with ScriptedOpenAIServer() as server:
        client(server).complete(request())
    assert server.requests[0]["response_format"]["json_schema"]["schema"] == SCHEMA


@pytest.mark.parametrize("status", [400, 500, 503])
def test_http_errors_become_failed_records(status: int) -> None:
    with ScriptedOpenAIServer(Behaviour(status=status)) as server:
        record = client(server).complete(request())
    assert record.status == "failed" and record.error.startswith(f"HTTP {status}")


def test_transient_errors_are_retried() -> None:
    with ScriptedOpenAIServer(Behaviour(reply=GOOD_REPLY)) as server:
        server.script = [Behaviour(status=503), Behaviour(status=429, headers={"Retry-After": "0"})]
        record = client(server, max_retries=3, backoff_base_s=0.05).complete(request())
    assert record.status == "ok" and len(server.requests) == 3


def test_garbage_body_does_not_crash_the_stage() -> None:
    with ScriptedOpenAIServer(Behaviour(raw=b"<html>oops</html>")) as server:
        record = client(server).complete(request())
    assert record.status == "failed" and record.error.startswith("malformed response")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_a_clear_error() -> None:
    instructor = OpenAIInstructor(base_url=f"http://127.0.0.1:{unused_port()}/v1", model="m", max_retries=0, timeout_s=2)
    with pytest.raises(InstructorError, match="unreachable"):
        instructor.check()
    with pytest.raises(InstructorError, match="rerun the same command to resume"):
        instructor.complete(request())


def test_missing_api_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAI_TEST_KEY", raising=False)
    with pytest.raises(InstructorError, match="LAI_TEST_KEY is empty"):
        OpenAIInstructor(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="LAI_TEST_KEY")


def test_api_key_is_sent_but_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAI_TEST_KEY", "sk-test-secret-value-123456")
    with ScriptedOpenAIServer() as server:
        instructor = client(server, api_key_env="LAI_TEST_KEY")
        run_requests(instructor, [request(i) for i in range(3)], tmp_path / "instruct.jsonl")
    assert "sk-test-secret-value-123456" not in (tmp_path / "instruct.jsonl").read_text()
    assert len(read_records(tmp_path / "instruct.jsonl", InstructRecord)) == 3


def test_runner_writes_replies_in_flight_before_reporting_a_lost_endpoint(tmp_path: Path) -> None:
    with ScriptedOpenAIServer() as server:
        instructor = client(server)
        run_requests(instructor, [request(0)], tmp_path / "instruct.jsonl")
    # The server is gone now: the next request fails, but what was written stays.
    with pytest.raises(InstructorError):
        run_requests(instructor, [request(1)], tmp_path / "instruct.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "instruct.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["le:gsm8k/train/0"]


def test_unknown_options_are_refused_not_ignored() -> None:
    from lai.config import build_config
    from lai.errors import ConfigError

    base = {"instructor": {"base_url": "http://127.0.0.1:1/v1", "options": {"burst_s": 2.0}}}
    assert build_config(base).instructor.options == {"burst_s": 2.0}
    with pytest.raises(ConfigError, match="openai backend has no setting tempreature"):
        build_config({"instructor": {"base_url": "http://127.0.0.1:1/v1", "options": {"tempreature": 0.1}}})
    with pytest.raises(ConfigError, match="no setting tempreature"):
        OpenAIInstructor(base_url="http://127.0.0.1:1/v1", model="m", tempreature=0.1)
