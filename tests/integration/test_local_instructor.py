"""The real instructor path: llama.cpp's OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lai.config import LocalInstructorConfig, build_config
from lai.instructor.async_client import AsyncOpenAIInstructor as OpenAIInstructor
from lai.instructor.local_server import LocalInstructorServer
from lai.instructor.parsing import parse_reply
from lai.pipeline import Pipeline, load_summaries
from lai.records import Attempt
from lai.strategies.le import LearningFromErrors
from lai.tasks import get_task

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python[server] not installed"),
]


def wrong_attempt() -> Attempt:
    return Attempt(
        id="gsm8k/train/0", task="gsm8k",
        question="Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        reference="72", prompt=[], response="She sold 48 + 2 = 50 clips. The answer is 50.",
        extracted="50", correct=False, reason="final answer 50, expected 72",
    )  # fmt: skip


def test_server_starts_answers_with_schema_constrained_json_and_stops(tmp_path: Path) -> None:
    request = LearningFromErrors(budget=2).plan([wrong_attempt()], {"gsm8k": get_task("gsm8k")})[0]
    with LocalInstructorServer(LocalInstructorConfig(enabled=True), tmp_path / "server.log") as server:
        process = server.process
        instructor = OpenAIInstructor(
            base_url=server.base_url, model=server.model_alias, max_tokens=400, seed=1,
            structured_output="json_object", max_retries=0,
        )  # fmt: skip
        instructor.check()
        record = instructor.complete(request)
    assert process is not None and process.poll() is not None, "the server must be stopped"
    assert record.status == "ok" and record.completion_tokens > 0 and record.prompt_tokens > 100
    if record.finish_reason == "stop":
        reply = json.loads(record.reply)  # the grammar guarantees JSON of the requested shape
        assert len(reply["samples"]) == request.n_requested
    assert parse_reply(record.reply).items or record.finish_reason == "length"


def test_instruct_stage_through_the_local_server(data_dir: Path, tmp_path: Path) -> None:
    config = build_config(
        {
            "name": "real-instructor",
            "data_dir": str(data_dir),
            "target": {"backend": "scripted", "model": "fake"},
            "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 2}]},
            "instructor": {
                "backend": "openai", "model": "x", "max_tokens": 300, "seed": 1, "concurrency": 1,
                "structured_output": "json_object", "local": {"enabled": True},
            },
            "strategy": {"name": "le", "budget": 2},
            "train": {"backend": "noop"},
            "evaluate": {"baseline": False, "benchmarks": [{"task": "gsm8k", "pool": "test", "limit": 2}]},
        }
    )  # fmt: skip
    Pipeline(config, tmp_path / "run").run()
    summary = load_summaries(tmp_path / "run")[1]
    assert summary["instruct"]["requests"] == summary["collect"]["wrong"] > 0
    assert summary["instruct"]["ok"] == summary["instruct"]["requests"]
    assert summary["instruct"]["models"] and summary["instruct"]["completion_tokens"] > 0
    assert summary["parse"]["parsed"] + summary["parse"]["drop_reasons"].get("unparseable reply", 0) > 0
    assert "the instructor in this run is weak" in (tmp_path / "run" / "report.md").read_text()
