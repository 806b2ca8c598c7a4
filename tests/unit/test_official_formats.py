"""Built-in tasks read their official splits whole, in every layout the data comes in.

ARC-Challenge's test split has 22 rows (of 1,172) whose option labels and answer key are
digits, "1".."4", instead of letters; lm-evaluation-harness reads them, so must we. The
rows below keep the real ids and label layouts of such rows (the question texts are
shortened stand-ins). A row a task truly cannot read is skipped with its id and counted,
unless strict loading is asked for.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from lai.errors import DataError
from lai.tasks import get_task

STEM = "Which tool is best for measuring the mass of a rock?"
TEXTS = ["ruler", "balance", "thermometer", "graduated cylinder"]

#: The same digit-labelled row (answer: the second option) in each layout it is found in.
LAYOUTS: dict[str, dict[str, Any]] = {
    # ARC's own JSONL (ARC-Challenge-Test.jsonl): a nested question with labelled choices.
    "official jsonl": {
        "id": "NYSEDREGENTS_2008_8_34",
        "question": {"stem": STEM, "choices": [{"text": t, "label": str(i)} for i, t in enumerate(TEXTS, 1)]},
        "answerKey": "2",
    },
    # The hub (allenai/ai2_arc): parallel text and label lists.
    "hub": {
        "id": "NYSEDREGENTS_2008_8_34",
        "question": STEM,
        "choices": {"text": TEXTS, "label": ["1", "2", "3", "4"]},
        "answerKey": "2",
    },
    # A local JSONL converted label by label: the options sit under "1".."4".
    "local, digit fields": {"id": "NYSEDREGENTS_2008_8_34", "question": STEM, **{str(i): t for i, t in enumerate(TEXTS, 1)}, "answer": "2"},
    # A local JSONL with letter fields and the original digit labels listed.
    "local, letter fields": {
        "id": "NYSEDREGENTS_2008_8_34", "question": STEM, **dict(zip("ABCD", TEXTS, strict=True)),
        "answer": "2", "label": ["1", "2", "3", "4"],
    },  # fmt: skip
    # Letter fields, digit answer, no label list: the digit is the option's position.
    "local, digit answer only": {"id": "NYSEDREGENTS_2008_8_34", "question": STEM, **dict(zip("ABCD", TEXTS, strict=True)), "answer": "2"},
}


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
def test_arc_digit_labelled_row_reads_in_every_layout(layout: str) -> None:
    task = get_task("arc_challenge")
    row = LAYOUTS[layout]
    sample = task.to_sample(row, 0, "test")
    assert sample.id == "arc_challenge/test/NYSEDREGENTS_2008_8_34"
    assert sample.reference == "B"  # shown to the model as letters, as lm-eval does
    assert sample.meta["options"] == dict(zip("ABCD", TEXTS, strict=True))
    assert sample.meta["stem"] == STEM
    assert task.score(sample, "The answer is (B).").correct
    assert task.lm_eval_continuations(sample) == [f" {t}" for t in TEXTS]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_split_mixing_letter_and_digit_rows_loads_whole(tmp_path: Path) -> None:
    letter_row = {
        "id": "Mercury_7175875", "question": "Which is a planet?", "A": "Moon", "B": "Mars", "C": "Sun", "D": "Comet",
        "answer": "B",
    }  # fmt: skip
    rows = [letter_row, *LAYOUTS.values()]
    path = write_jsonl(tmp_path / "arc.jsonl", [{**row, "id": f"{row['id']}_{i}"} for i, row in enumerate(rows)])
    task = get_task("arc_challenge")
    samples = task.load("test", path=path)
    assert len(samples) == len(rows) and task.skipped("test") == []
    assert [s.reference for s in samples] == ["B"] * len(rows)


def test_an_unreadable_row_is_skipped_with_its_id_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = LAYOUTS["hub"]
    broken = {"id": "Broken_1", "question": "Q?", "A": "only one option", "answer": "A"}
    path = write_jsonl(tmp_path / "arc.jsonl", [good, broken, {**good, "id": "Good_2"}])
    task = get_task("arc_challenge")
    with caplog.at_level(logging.WARNING):
        samples = task.load("test", path=path)
    assert [s.id for s in samples] == ["arc_challenge/test/NYSEDREGENTS_2008_8_34", "arc_challenge/test/Good_2"]
    assert task.skipped("test") == ["Broken_1"]
    assert "Broken_1" in caplog.text and "skipped 1 of 3 rows" in caplog.text
    with pytest.raises(DataError, match=r"arc\.jsonl: arc_challenge/test row Broken_1"):
        get_task("arc_challenge").load("test", path=path, strict=True)


def test_mmlu_reads_local_and_hub_layouts(tmp_path: Path) -> None:
    local = {"question": "2+2?", "A": "3", "B": "4", "C": "5", "D": "6", "answer": "B", "subject": "math"}
    hub = {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}
    numbers = {**local, "A": 3, "B": 4, "C": 5, "D": 6}  # options that are bare JSON numbers
    path = write_jsonl(tmp_path / "mmlu.jsonl", [local, hub, numbers])
    samples = get_task("mmlu").load("test", path=path)
    assert [s.reference for s in samples] == ["B", "B", "B"]
    assert samples[2].meta["options"]["B"] == "4"


def test_code_tasks_read_humaneval_and_original_mbpp_rows(tmp_path: Path) -> None:
    humaneval = {
        "task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
        "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f",
    }  # fmt: skip
    mbpp = {"task_id": 11, "text": "Return x.", "code": "def f(x):\n    return x", "test_list": ["assert f(1) == 1"], "test_setup_code": ""}
    assert len(get_task("humaneval").load("test", path=write_jsonl(tmp_path / "he.jsonl", [humaneval]))) == 1
    assert len(get_task("mbpp").load("test", path=write_jsonl(tmp_path / "mbpp.jsonl", [mbpp, humaneval]))) == 2


def test_gsm_plus_reads_github_and_hub_layouts(tmp_path: Path) -> None:
    github = {"question": "q?", "answer": "1 + 1 = 2\n#### 2", "extracted_answer": "2", "type": "numerical substitution"}
    hub = {"question": "q?", "solution": "1 + 1 = 2", "answer": "2", "perturbation_type": "critical thinking"}
    samples = get_task("gsm8k_plus").load("test", path=write_jsonl(tmp_path / "plus.jsonl", [github, hub]))
    assert [s.reference for s in samples] == ["2", "2"]
