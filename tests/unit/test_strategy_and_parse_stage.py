from __future__ import annotations

import json

from lai.instructor.prompts import template_hash
from lai.quality.parse import drop_reasons, parse_records
from lai.records import Attempt, InstructRecord
from lai.strategies.le import LearningFromErrors, samples_per_error
from lai.tasks import get_task

TASKS = {"gsm8k": get_task("gsm8k")}


def attempt(i: int, correct: bool) -> Attempt:
    return Attempt(
        id=f"gsm8k/train/{i}",
        task="gsm8k",
        question=f"Question number {i}: what is {i} + {i}?",
        reference=str(2 * i),
        prompt=[],
        response=f"I think it is {i}. The answer is {i}.",
        extracted=str(i),
        correct=correct,
        reason="",
    )


def test_samples_per_error_follows_the_paper() -> None:
    assert samples_per_error(100, 30) == 5  # ceil(100/30) + 1
    assert samples_per_error(48, 48) == 2
    assert samples_per_error(10, 0) == 0


def test_le_asks_once_per_error_and_shows_the_error() -> None:
    attempts = [attempt(i, correct=(i % 3 == 0)) for i in range(1, 10)]
    requests = LearningFromErrors(budget=12).plan(attempts, TASKS)
    wrong = [a for a in attempts if not a.correct]
    assert [r.source_ids[0] for r in requests] == [a.id for a in wrong]
    assert all(r.n_requested == 3 for r in requests)  # ceil(12/6) + 1
    content = requests[0].messages[0]["content"]
    assert wrong[0].question in content and wrong[0].response in content and wrong[0].reference in content
    assert requests[0].schema["properties"]["samples"]["minItems"] == 3
    again = LearningFromErrors(budget=12).plan(attempts, TASKS)
    assert [r.id for r in again] == [r.id for r in requests]  # stable ids make resume possible
    assert len(template_hash("le_math")) == 12


def record(rid: str, reply: str, status: str = "ok", finish: str = "stop") -> InstructRecord:
    request = LearningFromErrors(budget=4).plan([attempt(1, False)], TASKS)[0]
    return InstructRecord(
        id=rid, source_ids=["gsm8k/train/1"], task="gsm8k", strategy="le", n_requested=3,
        messages=request.messages, status=status, reply=reply, finish_reason=finish,
        error="HTTP 500: boom" if status != "ok" else None,
    )  # fmt: skip


def test_parse_stage_keeps_good_samples_and_explains_every_drop() -> None:
    good = {"question": "A farm has 4 cows and 6 hens. How many animals?", "solution": "4 + 6 = 10", "answer": 10}
    example = {"question": "A baker fills 4 trays with 12 muffins each. How many muffins does she bake?", "solution": "48", "answer": 48}
    source = {"question": "Question number 1: what is 1 + 1?", "solution": "2", "answer": 2}
    placeholder = {"question": "<a new question>", "solution": "s", "answer": 1}
    cut_example = {"question": "A baker fills 4 trays with 12 muffins each.", "solution": "12 * 4 = 48", "answer": 48}
    swapped = {"question": "A baker fills 5 trays with 12 muffins each. How many muffins does she bake?", "solution": "60", "answer": 60}
    records = [
        record("a", json.dumps({"diagnosis": "adds", "samples": [good, example, source, placeholder, good, cut_example, swapped]})),
        record("b", "no idea"),
        record("c", "", status="failed"),
    ]
    samples = parse_records(records, TASKS, {"gsm8k/train/1": "Question number 1: what is 1 + 1?"}, iteration=1)
    kept = [s for s in samples if s.kept]
    assert [(s.question, s.answer, s.diagnosis) for s in kept] == [(good["question"], "10", "adds")]
    assert drop_reasons(samples) == {"copy": 4, "format": 1, "duplicate": 1, "unparseable reply": 1, "request failed": 1}
    unparseable = next(s for s in samples if s.id == "b#reply")
    assert unparseable.raw == "no idea"  # the malformed reply is kept with its reason
    assert len({s.id for s in samples}) == len(samples)
