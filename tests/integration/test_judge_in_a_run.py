"""A task file scored by ``llm_judge`` in ``lai run``: the run's instructor judges while a
stage scores. A local server (the embedded default's shape) is started for the stage and
stops with it: a stand-in for the server process (tests/helpers/fake_vllm_server.py)
answers every request with one verdict. A remote endpoint is a real HTTP server on
127.0.0.1 (tests/helpers/openai_server.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from lai import judge
from lai.config import build_config
from lai.pipeline import Pipeline
from lai.tasks.from_file import forget_user_tasks, register_task_files
from tests.helpers.openai_server import Behaviour, ScriptedOpenAIServer
from tests.unit.test_judge import TASK_FILE  # llm_judge first, then exact match

REPO = Path(__file__).resolve().parents[2]
STAND_IN = REPO / "tests" / "helpers" / "fake_vllm_server.py"
VERDICT = json.dumps({"reasoning": "the judge accepts every answer", "verdict": "correct"})


def judged_evaluation(tmp_path: Path, instructor: dict[str, Any]) -> list[dict[str, Any]]:
    """The baseline evaluate stage of a run on a judged task file; its records."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "judged_here.yaml").write_text(TASK_FILE.replace("judged_sums", "judged_here"))
    (folder / "test.jsonl").write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(5)))
    register_task_files([folder])
    try:
        config = build_config({
            "name": "judged", "iterations": 1, "data_dir": str(REPO / "tests" / "fixtures" / "data"),
            "target": {"backend": "scripted", "model": "fake-model"},
            "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 4}]},
            "instructor": {"backend": "openai", "model": "teacher", **instructor},
            "strategy": {"name": "le", "budget": 4, "embedder": "hashing"},
            "train": {"backend": "noop"},
            "evaluate": {"benchmarks": [{"task": "judged_here", "pool": "test"}]},
        })  # fmt: skip
        pipeline = Pipeline(config, tmp_path / "run")
        pipeline._stage(0, "evaluate", pipeline.evaluate, 0, "fake-model")
    finally:
        forget_user_tasks()
    assert judge.default_endpoint() is None  # the stage's judge is forgotten after it
    return [json.loads(line) for line in (tmp_path / "run" / "iter_00" / "eval" / "judged_here-test.jsonl").read_text().splitlines()]


@pytest.mark.slow  # starts a server process
def test_a_local_instructor_is_started_to_judge_the_stage_and_stops_after(tmp_path: Path) -> None:
    local = {
        "enabled": True, "server": "vllm", "model": "org/model", "launcher": [sys.executable, str(STAND_IN)],
        "extra_args": ["--reply", VERDICT], "startup_timeout_s": 120,
    }  # fmt: skip
    records = judged_evaluation(tmp_path, {"local": local})
    assert len(records) == 5
    assert all(r["correct"] and "the judge accepts every answer" in r["reason"] for r in records)
    assert "stand-in vLLM server" in (tmp_path / "run" / "logs" / "instructor_server.log").read_text()  # started for the stage


def test_a_remote_instructor_judges_with_the_runs_settings(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(Behaviour(reply=VERDICT)) as server:
        records = judged_evaluation(tmp_path, {"base_url": server.base_url, "local": {"enabled": False}})
    assert len(records) == 5 and all(r["correct"] and r["reason"].startswith("judge teacher: ") for r in records)
    assert len(server.requests) == 5 and {body["model"] for body in server.requests} == {"teacher"}
    assert (tmp_path / "run" / "instructor_cache.sqlite").is_file()  # verdicts in the run's request cache
