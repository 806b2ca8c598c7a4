"""The shipped task files give the same prompts and per-item scores as the classes they
re-express (issue 16, item 2): gsm8k_yaml vs GSM8K, arc_challenge_yaml vs ARCChallenge,
paper protocol, on the same local rows and a set of varied responses."""

from __future__ import annotations

from pathlib import Path

import pytest

from lai.records import Sample
from lai.tasks import get_task

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"

MATH_RESPONSES = [
    "Step by step: 40 - 4 = 36, 36 * 3 = 108, 108 * 3 = 324.\nThe answer is 324.",
    "The answer is $1,000.",
    "The answer is: **1,000.00**",
    "I am not sure how to do this one.",
    "First 3 + 4 = 7, then 7 * 2 = 14. #### 14",
    "The answer is 12. Wait, no: the answer is 13.",
    "-7",
    "It costs .5 dollars",
    "2,5,7 and finally 3.50.",
    "The answer is 1e3 maybe; 18",
    "",
]

LETTER_RESPONSES = [
    "The answer is (B).",
    "answer: d",
    "**C**",
    "B) 330",
    "(a)",
    "I think it is 330.",
    "\\boxed{A}",
    "The answer is a trick question; the answer is C.",
    "None of these.",
    "The correct option is E",
    "D.",
    "",
]


def pairs(name: str, data_dir: Path, pool: str = "test") -> list[tuple[Sample, Sample]]:
    old, new = get_task(name), get_task(f"{name}_yaml")
    old_rows, new_rows = old.load(pool, data_dir=data_dir), new.load(pool, data_dir=data_dir)
    assert len(old_rows) == len(new_rows) > 0
    return list(zip(old_rows, new_rows, strict=True))


def check_same(name: str, data_dir: Path, responses: list[str], pool: str = "test") -> int:
    old, new = get_task(name), get_task(f"{name}_yaml")
    compared = 0
    for a, b in pairs(name, data_dir, pool):
        assert b.id == a.id.replace(name, f"{name}_yaml", 1)
        assert (b.question, b.reference) == (a.question, a.reference)
        assert new.prompt(b) == old.prompt(a)
        assert new.generation() == old.generation()
        assert new.scoring_mode() == old.scoring_mode()
        # Every response, plus one that states this item's own reference.
        for response in [*responses, f"So the answer is {a.reference}."]:
            assert new.score(b, response) == old.score(a, response), response
            compared += 1
        assert new.reference_sample(b) == old.reference_sample(a)
    return compared


def test_gsm8k_file_matches_the_class_on_the_fixture_rows() -> None:
    assert check_same("gsm8k", FIXTURES, MATH_RESPONSES) > 100
    check_same("gsm8k", FIXTURES, MATH_RESPONSES[:3], pool="train")


def test_arc_file_matches_the_class_on_the_fixture_rows() -> None:
    assert check_same("arc_challenge", FIXTURES, LETTER_RESPONSES) > 50
    old, new = get_task("arc_challenge"), get_task("arc_challenge_yaml")
    for a, b in pairs("arc_challenge", FIXTURES):
        assert new.choices(b) == old.choices(a)
        assert new.choices(b, "lm-eval") == old.choices(a, "lm-eval")


def test_the_instructor_side_matches_too() -> None:
    old, new = get_task("gsm8k"), get_task("gsm8k_yaml")
    item = {"question": "Tom has 3 bags of 4 apples. How many apples?", "solution": "3 * 4 = <<3*4=12>>12", "answer": "$12"}
    assert new.check_generated(item) == old.check_generated(item)
    assert new.training_target("3 * 4 = <<3*4=12>>12", "12") == old.training_target("3 * 4 = <<3*4=12>>12", "12")
    for text in ("1,000", "$1,000.00", "the answer is 7", "none"):
        assert new.normalize_answer(text) == old.normalize_answer(text)
    assert new.instructor_templates == old.instructor_templates
    assert new.resolve_rule == old.resolve_rule
    for bad in ({"question": "short", "solution": "x", "answer": 1}, {"question": "How many apples are there?", "solution": "x", "answer": 2}):
        with pytest.raises(ValueError) as new_error:
            new.check_generated(bad)
        with pytest.raises(ValueError) as old_error:
            old.check_generated(bad)
        assert str(new_error.value) == str(old_error.value)

    old, new = get_task("arc_challenge"), get_task("arc_challenge_yaml")
    item = {"question": "Which is a gas?", "options": {"A": "ice", "B": "steam", "C": "rock", "D": "wood"}, "answer": "B", "explanation": "Steam is water as a gas."}
    assert new.check_generated(item) == old.check_generated(item)
    assert new.training_target("Steam is a gas.", "B") == old.training_target("Steam is a gas.", "B")
    question = old.check_generated(item)[0]
    assert new.prompt(new.training_sample(question)) == old.prompt(old.training_sample(question))
    for text in ("(b)", "B.", "Because", "c"):
        assert new.normalize_answer(text) == old.normalize_answer(text)
    assert new.instructor_templates == old.instructor_templates
    assert new.resolve_rule == old.resolve_rule


@pytest.mark.slow
def test_the_files_match_the_classes_on_the_shared_rows(shared_data_dir: Path) -> None:
    check_same("gsm8k", shared_data_dir, MATH_RESPONSES)
    check_same("arc_challenge", shared_data_dir, LETTER_RESPONSES)
    # The whole GSM8K training pool: every row read the same way (few responses, it is large).
    check_same("gsm8k", shared_data_dir, MATH_RESPONSES[:2], pool="train")


def test_arc_file_reads_the_hub_and_official_layouts_like_the_class() -> None:
    from lai.tasks.base import Task

    hub = {"id": "Mercury_1", "question": "Which is a gas?", "choices": {"text": ["ice", "steam", "rock", "wood"], "label": ["A", "B", "C", "D"]}, "answerKey": "B"}
    digits = {"id": "NYSED_2", "question": "Pick three.", "choices": {"text": ["one", "two", "three"], "label": ["1", "2", "3"]}, "answerKey": "3"}
    official = {"id": "ARC_3", "question": {"stem": "Which is hot?", "choices": [{"text": "sun", "label": "A"}, {"text": "snow", "label": "B"}]}, "answerKey": "A"}
    old, new = get_task("arc_challenge"), get_task("arc_challenge_yaml")
    for row in (hub, digits, official):
        a: Sample = Task.read_rows(old, [row], "test", "rows", skipped=[])[0]
        b: Sample = new.read_rows([row], "test", "rows", skipped=[])[0]
        assert (b.question, b.reference, b.meta["options"]) == (a.question, a.reference, a.meta["options"])
        assert new.prompt(b) == old.prompt(a) and new.choices(b, "lm-eval") == old.choices(a, "lm-eval")
