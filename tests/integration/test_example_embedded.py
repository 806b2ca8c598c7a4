"""examples/unit_conversions/config.yaml with the real embedded default (SmolLM2-135M as
target in transformers and as instructor behind llama.cpp), made tiny so the slow tier
runs the whole loop in a few minutes: 4 training questions, a budget of 4 samples, two
optimizer steps, 4 test questions (issue 16, item 5)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lai.config import load_config
from lai.pipeline import Pipeline
from lai.store import load_summaries
from lai.tasks.from_file import forget_user_tasks

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python[server] not installed"),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "unit_conversions"

TINY = [
    "select.pools=[{task: unit_conversions, pool: train, n: 4}]",
    "evaluate.benchmarks=[{task: unit_conversions, pool: test, limit: 4}]",
    "strategy.budget=4",
    "target.max_new_tokens=64",
    "target.batch_size=4",
    "instructor.max_tokens=320",
    "train.max_steps=2",
    "train.max_length=256",
    "verify.dedup.enabled=false",  # no sentence-embedding model to load: the loop, not the checks
    "verify.decontaminate.enabled=false",
]


def test_the_example_config_runs_with_the_embedded_models(tmp_path: Path) -> None:
    forget_user_tasks()
    try:
        config = load_config(EXAMPLE / "config.yaml", TINY)
        run_dir = tmp_path / "run"
        Pipeline(config, run_dir).run()
    finally:
        forget_user_tasks()
    summaries = load_summaries(run_dir)
    assert sorted(summaries) == [0, 1]
    assert summaries[1]["select"]["selected"] == 4
    collect = [json.loads(line) for line in (run_dir / "iter_01" / "collect.jsonl").read_text().splitlines()]
    assert len(collect) == 4 and all(r["task"] == "unit_conversions" for r in collect)
    responses = [r["response"] for r in collect]
    assert any(len(r.split()) > 2 for r in responses), f"real English from the target, not noise: {responses}"
    assert all(r["extracted"] is None or r["reason"].startswith("final answer") for r in collect)
    assert (run_dir / "report.md").exists()
    assert "unit_conversions/test" in (run_dir / "report.md").read_text()
