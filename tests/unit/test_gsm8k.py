from __future__ import annotations

import json
from pathlib import Path

import pytest

from lai.errors import DataError
from lai.tasks import get_task
from lai.tasks.base import SampleRejected
from lai.tasks.gsm8k import extract_answer, normalize_number

TASK = get_task("gsm8k")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("She earns 5 * 2 = 10 dollars.\nThe answer is 10.", "10"),
        ("The answer is $1,234.50", "1234.5"),
        ("So the answer is: **72**", "72"),
        ("First 3 + 4 = 7, then 7 * 2 = 14.", "14"),
        ("The answer is 28 / 4 = 7.\nSo the final answer is 7.25 dollars.", "7.25"),
        ("#### 18", "18"),
        ("The total is -5 degrees. The answer is -5.", "-5"),
        ("I cannot solve this.", None),
        ("The answer is 18.0", "18"),
    ],
)
def test_extract_answer_on_messy_responses(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


def test_normalize_number() -> None:
    assert normalize_number("$1,000") == "1000"
    assert normalize_number("0.50") == "0.5"
    assert normalize_number("abc") is None


def test_real_rows_load_and_score(shared_data_dir: Path) -> None:
    train = TASK.load("train", data_dir=shared_data_dir)
    assert len(train) == 7473
    first = train[0]
    assert first.id == "gsm8k/train/0" and first.reference == "72"
    assert "48/2" in first.meta["solution"]
    prompt = TASK.prompt(first)
    assert prompt[0]["role"] == "user" and first.question in prompt[0]["content"]
    right = TASK.score(first, "48 / 2 = 24 in May, 48 + 24 = 72.\nThe answer is 72.")
    wrong = TASK.score(first, "The answer is 50.")
    assert right.correct and right.extracted == "72"
    assert not wrong.correct and wrong.reason == "final answer 50, expected 72"
    test = TASK.load("test", data_dir=shared_data_dir)
    assert len(test) == 40  # falls back to test_sample.jsonl


def test_seeded_subset_is_reproducible(data_dir: Path) -> None:
    a = TASK.load("train", data_dir=data_dir, limit=5, seed=7)
    b = TASK.load("train", data_dir=data_dir, limit=5, seed=7)
    c = TASK.load("train", data_dir=data_dir, limit=5, seed=8)
    assert [s.id for s in a] == [s.id for s in b] != [s.id for s in c]


def test_wrong_format_names_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n" + json.dumps({"question": "q2"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2 is missing field 'answer'"):
        TASK.load("train", path=path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1 is not valid JSON"):
        TASK.load("train", path=path)


def test_a_row_without_a_final_answer_is_skipped_and_counted(tmp_path: Path) -> None:
    """Before, its whole solution became the reference and every answer to it was wrong."""
    path = tmp_path / "rows.jsonl"
    rows = [{"question": "q1", "answer": "1 + 1 = 2\n#### 2"}, {"question": "q2", "answer": "He eats 32 from the box."}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = get_task("gsm8k")
    samples = task.load("train", path=path)
    assert [s.reference for s in samples] == ["2"] and task.skipped("train") == ["1"]
    with pytest.raises(DataError, match=r"row 1: its answer has no final '#### N' line"):
        task.load("train", path=path, strict=True)


def test_missing_data_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        TASK.load("train", data_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "gsm8k" / "train.jsonl") in message
    assert "openai/gsm8k" in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(DataError, match="not found"):
        TASK.load("train", path=tmp_path / "absent.jsonl")


def test_lai_data_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    monkeypatch.setenv("LAI_DATA_DIR", str(tmp_path))
    samples = TASK.load("train")
    assert [(s.question, s.reference) for s in samples] == [("1+1?", "2")]


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"question": "", "solution": "s", "answer": 1}, "missing question"),
        ({"question": "<a new question>", "solution": "s", "answer": 1}, "no numbers"),
        ({"question": "Tom has 3 apples and buys 2.", "solution": "", "answer": 5}, "missing solution"),
        ({"question": "Tom has 3 apples and buys 2.", "solution": "3+2", "answer": "five"}, "not a number"),
    ],
)
def test_generated_sample_checks(item: dict, reason: str) -> None:
    with pytest.raises(SampleRejected, match=reason):
        TASK.check_generated(item)


def test_good_generated_sample_and_training_target() -> None:
    question, solution, answer = TASK.check_generated(
        {"question": "Tom has 3 apples and buys 2 more. How many?", "solution": "3 + 2 = 5", "answer": "5.0"}
    )
    assert answer == "5"
    target = TASK.training_target("48/2 = <<48/2=24>>24", "24")
    assert target == "48/2 = 24\nThe answer is 24."
    assert extract_answer(target) == "24"  # what the model learns is what the scorer reads
