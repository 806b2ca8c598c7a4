"""A task family and a strategy lai has never seen, added from this test module alone (the
how-to in docs/architecture.md, "Adding things"): registered, validated, and run through
the whole loop on fakes without one edit to lai's own files."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

from lai.config import build_config
from lai.data import PoolSource
from lai.errors import ConfigError
from lai.instructor import prompts
from lai.instructor.base import InstructRequest
from lai.pipeline import Pipeline
from lai.records import Attempt, Sample, Score
from lai.store import load_summaries
from lai.strategies import STRATEGIES, strategy_class
from lai.strategies.base import Strategy
from lai.tasks import TASKS
from lai.tasks.base import Prompt, ResolveRule, SampleRejected, Task

# The toy task brings its own instructor prompts; the scripted instructor writes sums and
# re-solves what follows "## Problem", so these prompts keep that shape.
TOY_LE = """A student was asked: $question
It answered: $response (the right answer is $reference).
Write $n new sums of the same kind as JSON: {"diagnosis": "...", "samples": [{"question": "...", "solution": "...", "answer": 1}]}"""
TOY_RESOLVE = """Add up the numbers.

## Problem
$question

Reply with JSON only: {"reasoning": "...", "answer": 3}"""


class ToySums(Task):
    """A new task family: "a plus b" questions, answered with one number."""

    name = "toy_sums"
    pools: ClassVar[dict[str, PoolSource]] = {
        "train": PoolSource(("toy/train.jsonl",), ("a", "b")),
        "test": PoolSource(("toy/test.jsonl",), ("a", "b")),
    }
    sample_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"question": {"type": "string"}, "solution": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "solution", "answer"],
    }
    instructor_templates: ClassVar[dict[str, str]] = {"le": "toy_sums_le"}
    resolve_rule: ClassVar[ResolveRule | None] = ResolveRule(
        "toy_sums_resolve", {"type": "object", "properties": {"answer": {"type": "number"}}, "required": ["answer"]}
    )

    def __init__(self) -> None:
        prompts.register("toy_sums_le", TOY_LE)
        prompts.register("toy_sums_resolve", TOY_RESOLVE)

    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        a, b = int(row["a"]), int(row["b"])
        return Sample(f"{self.name}/{pool}/{index}", self.name, f"What is {a} plus {b}?", str(a + b))

    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        return [{"role": "user", "content": sample.question}]

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        found = self.normalize_answer(response)
        return Score(found == sample.reference, found, f"said {found}, expected {sample.reference}")

    def normalize_answer(self, text: str) -> str | None:
        numbers = re.findall(r"-?\d+", text)
        return numbers[-1] if numbers else None

    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        question, answer = str(item.get("question", "")), self.normalize_answer(str(item.get("answer", "")))
        if not question or answer is None:
            raise SampleRejected("no question or no number")
        return question, str(item.get("solution", "")), answer

    def training_target(self, solution: str, answer: str) -> str:
        return f"{solution}\nThe answer is {answer}."


class FirstErrorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    errors_asked: int = Field(3, ge=1)


class FirstErrorsOnly(Strategy):
    """A new strategy with a setting of its own: one request for each of the first
    ``errors_asked`` errors, nothing else."""

    name = "first_errors"
    request_kind = "le"
    description = "asked the instructor about the first few errors only"
    settings = FirstErrorsSettings

    def __init__(self, budget: int, seed: int = 0, iteration: int = 1, errors_asked: int = 3, **options: Any) -> None:
        super().__init__(budget, seed, iteration, **options)
        self.errors_asked = errors_asked

    def plan(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        errors = sorted((a for a in attempts if not a.correct), key=lambda a: a.id)[: self.errors_asked]
        requests = []
        for attempt in errors:
            template = self.template_for(tasks[attempt.task])
            values = {"question": attempt.question, "response": attempt.response, "reference": attempt.reference, "n": 2}
            requests.append(
                InstructRequest(
                    id=f"{self.name}:{attempt.id}", source_ids=[attempt.id], task=attempt.task, strategy=self.name,
                    n_requested=2, messages=[{"role": "user", "content": prompts.render(template, **values)}],
                    template=template, template_hash=prompts.template_hash(template),
                )  # fmt: skip
            )
        return requests


@pytest.fixture
def registered() -> Iterator[None]:
    TASKS.register(ToySums.name, ToySums)
    STRATEGIES.register(FirstErrorsOnly.name, FirstErrorsOnly)
    try:
        yield
    finally:
        TASKS.unregister(ToySums.name)
        STRATEGIES.unregister(FirstErrorsOnly.name)


def write_rows(path: Path, pairs: list[tuple[int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"a": a, "b": b}) + "\n" for a, b in pairs))


def test_a_new_task_family_and_strategy_run_through_the_loop(registered: None, tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_rows(data / "toy" / "train.jsonl", [(i, 2 * i + 1) for i in range(30)])
    write_rows(data / "toy" / "test.jsonl", [(100 + i, i) for i in range(5)])
    config = build_config({
        "name": "toy", "seed": 1, "iterations": 1, "data_dir": str(data),
        "target": {"backend": "scripted", "model": "fake-model"},
        "select": {"pools": [{"task": "toy_sums", "pool": "train", "n": 12}]},
        "instructor": {"backend": "scripted", "model": "fake-teacher"},
        "strategy": {"name": "first_errors", "budget": 6, "embedder": "hashing", "errors_asked": 2},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [{"task": "toy_sums", "pool": "test"}]},
    })  # fmt: skip
    run = tmp_path / "run"
    Pipeline(config, run).run()

    summary = load_summaries(run)[1]
    assert summary["collect"]["n"] == 12 and summary["collect"]["wrong"] >= 3
    assert "errors_asked: 2" in (run / "config.yaml").read_text()  # saved with the run
    instruct = [json.loads(line) for line in (run / "iter_01/instruct.jsonl").read_text().splitlines()]
    assert len(instruct) == 2 and {r["template"] for r in instruct} == {"toy_sums_le"}  # its own setting
    assert "It answered:" in instruct[0]["messages"][0]["content"]  # the task's own prompt
    # Verify re-solved the task's samples with the task's own rule, and kept the right ones.
    resolve = [json.loads(line) for line in (run / "iter_01/verify_instruct.jsonl").read_text().splitlines()]
    assert resolve and {r["template"] for r in resolve} == {"toy_sums_resolve"}
    assert summary["verify"]["checks"][-1] == "resolve" and summary["verify"]["kept"] > 0
    assert summary["train"]["examples"] == summary["verify"]["kept"]
    templates = json.loads((run / "manifest.json").read_text())["templates"]
    assert templates["toy_sums_le"] == prompts.template_hash("toy_sums_le")
    # The reports describe the strategy in its own words.
    assert strategy_class("first_errors") is FirstErrorsOnly
    assert FirstErrorsOnly.description in (run / "report.md").read_text()
    assert "toy_sums/test" in summary["evaluate"]["scores"]


def test_an_unregistered_name_is_refused_by_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'first_errors'"):
        build_config({"strategy": {"name": "first_errors"}})


@pytest.mark.parametrize(
    "strategy, error",
    [
        ({"name": "first_errors", "errors_asked": 0}, r"strategy\.errors_asked: Input should be greater than or equal to 1 \(a setting of strategy first_errors\)"),
        ({"name": "first_errors", "errors_askd": 2}, r"strategy\.errors_askd: unknown key \(a setting of strategy first_errors\)"),
        ({"name": "le", "errors_asked": 2}, r"strategy\.errors_asked: unknown key \(strategy le has no setting of that name"),
    ],
)
def test_a_strategys_own_settings_are_checked_like_any_key(registered: None, strategy: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build_config({"strategy": strategy})
