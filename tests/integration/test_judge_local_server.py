"""A task file scored by ``llm_judge`` in a run whose instructor is a local server (the
embedded default's shape): the server is started for the scoring stage and judges, then
stops with it. A stand-in for the server process (tests/helpers/fake_vllm_server.py)
answers every request with one verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lai.config import build_config
from lai.pipeline import Pipeline
from lai.tasks.from_file import forget_user_tasks, register_task_files
from tests.unit.test_judge import TASK_FILE  # llm_judge first, then exact match

pytestmark = pytest.mark.slow  # starts a server process

REPO = Path(__file__).resolve().parents[2]
STAND_IN = REPO / "tests" / "helpers" / "fake_vllm_server.py"
VERDICT = json.dumps({"reasoning": "the stand-in accepts every answer", "verdict": "correct"})


def test_the_local_instructor_judges_the_evaluate_stage_and_stops_after(tmp_path: Path) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "judged_locally.yaml").write_text(TASK_FILE.replace("judged_sums", "judged_locally"))
    (folder / "test.jsonl").write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(5)))
    register_task_files([folder])
    try:
        config = build_config({
            "name": "judged", "iterations": 1, "data_dir": str(REPO / "tests" / "fixtures" / "data"),
            "target": {"backend": "scripted", "model": "fake-model"},
            "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 4}]},
            "instructor": {"backend": "openai", "model": "local", "local": {
                "enabled": True, "server": "vllm", "model": "org/model", "launcher": [sys.executable, str(STAND_IN)],
                "extra_args": ["--reply", VERDICT], "startup_timeout_s": 120,
            }},
            "strategy": {"name": "le", "budget": 4, "embedder": "hashing"},
            "train": {"backend": "noop"},
            "evaluate": {"benchmarks": [{"task": "judged_locally", "pool": "test"}]},
        })  # fmt: skip
        run = tmp_path / "run"
        pipeline = Pipeline(config, run)
        pipeline._stage(0, "evaluate", pipeline.evaluate, 0, "fake-model")
    finally:
        forget_user_tasks()
    records = [json.loads(line) for line in (run / "iter_00" / "eval" / "judged_locally-test.jsonl").read_text().splitlines()]
    assert len(records) == 5
    assert all(r["correct"] and "the stand-in accepts every answer" in r["reason"] for r in records)
    assert "stand-in vLLM server" in (run / "logs" / "instructor_server.log").read_text()  # it was started for the stage
    from lai import judge

    assert judge.default_endpoint() is None  # the stage's judge is forgotten with its server
