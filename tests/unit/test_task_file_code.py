"""A code task as a file: the code_block filter, the unit_tests metric in the sandbox, and
verify's execution check on a written sample (issue 16, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

from lai.quality.verify import check_execution
from lai.records import GeneratedSample
from lai.tasks.from_file import task_class
from tests.helpers.sandbox import needs_isolation, stop_zygotes  # noqa: F401 - a fixture

TASK = """\
task: tiny_code
dataset_path: json
dataset_kwargs: {data_files: {test: test.jsonl}}
test_split: test
doc_to_text: "Write a Python function `{{ name }}(a, b)` that {{ what }}."
doc_to_target: "{{ tests | join('\\n') }}"
filter_list:
  - name: code
    filter: [{function: code_block}]
metric_list:
  - {metric: unit_tests, timeout_s: 10}
lai:
  instructor:
    description: small Python functions
    sample_schema:
      type: object
      properties: {question: {type: string}, solution: {type: string}, tests: {type: string}}
      required: [question, solution, tests]
    answer: "{{ tests }}"
    training_target: "```python\\n{{ solution }}\\n```"
    rules:
      - {check: "'assert' in answer", reason: tests contain no assert}
"""
ROWS = [
    {"name": "add", "what": "returns a + b", "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]},
    {"name": "mul", "what": "returns a * b", "tests": ["assert mul(2, 3) == 6"]},
]


def make(tmp_path: Path):
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "tiny_code.yaml").write_text(TASK)
    return task_class(tmp_path / "tiny_code.yaml")()


@needs_isolation
def test_code_is_run_against_the_row_tests(tmp_path: Path) -> None:
    task = make(tmp_path)
    add, mul = task.load("test")
    assert add.reference == "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
    right = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef mul(a, b):\n    return a + b\n```"
    scores = task.score_many([add, mul], [right, wrong])
    assert scores[0].correct and scores[0].extracted == "def add(a, b):\n    return a + b"
    assert not scores[1].correct and "AssertionError" in scores[1].reason


@needs_isolation
def test_verify_runs_a_written_sample_against_its_own_tests(tmp_path: Path) -> None:
    task = make(tmp_path)
    good = {"question": "Write sub(a, b).", "solution": "def sub(a, b):\n    return a - b", "tests": "assert sub(3, 1) == 2"}
    bad = {**good, "solution": "def sub(a, b):\n    return b - a"}
    samples = []
    for k, item in enumerate((good, bad)):
        question, solution, answer = task.check_generated(item)
        samples.append(GeneratedSample(
            id=f"le:x#{k}", request_id="le:x", source_ids=["x"], task="tiny_code", question=question,
            solution=solution, answer=answer, kept=True, strategy="le",
        ))  # fmt: skip
    checked = check_execution(samples, {"tiny_code": task})
    assert [s.kept for s in checked] == [True, False]
    assert "fails its tests" in (checked[1].drop_reason or "")
