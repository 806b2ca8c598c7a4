"""MBPP and HumanEval: loading, prompts, extraction and sandboxed scoring on real rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lai.instructor.prompts import render
from lai.instructor.reply_json import parse_reply
from lai.records import Sample
from lai.tasks import get_task
from lai.tasks.base import SampleRejected
from lai.tasks.code import HUMANEVAL_STOP, MBPP, HumanEval, cut_at_stop, mbpp_fewshot

HUMANEVAL = HumanEval(timeout_s=5.0)
MBPP_TASK = MBPP(timeout_s=5.0)

GOOD_ITEM: dict[str, Any] = {
    "question": 'def double(x: int) -> int:\n    """Return twice x.\n    >>> double(2)\n    4\n"""',
    "solution": "def double(x: int) -> int:\n    return 2 * x",
    "tests": "assert double(2) == 4\nassert double(-1) == -2",
}


def fenced(code: str) -> str:
    return f"Here is the function:\n\n```python\n{code}\n```\nIt loops over the pairs."


@pytest.fixture(scope="module")
def humaneval_rows(data_dir: Path) -> list[Sample]:
    return HUMANEVAL.load("test", data_dir=data_dir)


@pytest.fixture(scope="module")
def mbpp_test(data_dir: Path) -> list[Sample]:
    return MBPP_TASK.load("test", data_dir=data_dir)


@pytest.fixture(scope="module")
def real_humaneval_rows(shared_data_dir: Path) -> list[Sample]:
    """The real HumanEval rows, for the tests that check what HumanEval/0 says."""
    return HUMANEVAL.load("test", data_dir=shared_data_dir)


@pytest.fixture(scope="module")
def real_mbpp_test(shared_data_dir: Path) -> list[Sample]:
    return MBPP_TASK.load("test", data_dir=shared_data_dir)


def test_registry_names_the_classes() -> None:
    assert isinstance(get_task("mbpp"), MBPP) and isinstance(get_task("humaneval"), HumanEval)
    assert get_task("mbpp").instructor_template("le") == "le_code" and get_task("mbpp").resolve_rule is None


def test_canonical_solutions_pass_under_both_protocols(humaneval_rows: list[Sample]) -> None:
    samples = humaneval_rows
    paper = [fenced(s.question + s.meta["canonical_solution"]) for s in samples]
    completions = [s.meta["canonical_solution"] for s in samples]
    for protocol, responses in (("paper", paper), ("lm-eval", completions)):
        scores = HUMANEVAL.score_many(samples, responses, protocol)
        pairs = zip(samples, scores, strict=True)
        failed = [(s.id, sc.reason) for s, sc in pairs if not sc.correct]
        assert not failed, protocol
        assert all(sc.reason == "passed" for sc in scores)


def test_sample_fields_and_prompts(real_humaneval_rows: list[Sample]) -> None:
    first = real_humaneval_rows[0]
    assert len(real_humaneval_rows) == 20 and first.id == "humaneval/test/HumanEval/0"
    assert first.meta["entry_point"] == "has_close_elements"
    assert first.reference == first.meta["test"] and "def check(candidate)" in first.reference
    chat = HUMANEVAL.prompt(first)
    assert chat[0]["role"] == "user" and first.question.strip() in chat[0]["content"]
    assert "```python" in chat[0]["content"]
    assert HUMANEVAL.prompt(first, "lm-eval") == first.question  # the raw row prompt, as is
    spec = HUMANEVAL.generation("lm-eval")
    assert spec.stop == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    assert spec.max_new_tokens == 1024
    assert HUMANEVAL.generation("paper").stop == ()


def test_paper_protocol_keeps_the_prompt_header_and_picks_the_defining_block(
    real_humaneval_rows: list[Sample],
) -> None:
    sample = real_humaneval_rows[0]  # the prompt imports List; the reply below does not
    body = sample.question[sample.question.index("def ") :] + sample.meta["canonical_solution"]
    two_blocks = f"Usage:\n```python\nprint(has_close_elements([1.0], 0.5))\n```\n{fenced(body)}"
    score = HUMANEVAL.score(sample, two_blocks)
    assert score.correct, score.reason
    assert score.extracted is not None and score.extracted.startswith("def has_close_elements")
    bare = HUMANEVAL.score(sample, "Sure.\n" + body)  # no fences: the code after the prose
    assert bare.correct, bare.reason


def test_failures_have_informative_reasons(real_humaneval_rows: list[Sample]) -> None:
    sample = real_humaneval_rows[0]
    wrong = fenced(sample.question + "    return False\n")
    elsewhere = fenced("def helper(numbers):\n    return False")
    scores = HUMANEVAL.score_many([sample, sample, sample], [wrong, elsewhere, "I don't know."])
    assert not any(s.correct for s in scores)
    assert scores[0].reason.startswith("failed: AssertionError")
    assert "(at: assert candidate(" in scores[0].reason  # names the failing case
    assert scores[1].reason == "no code block defines has_close_elements"
    assert scores[1].extracted is None
    assert scores[2].reason.startswith("no code block defines has_close_elements")


def test_an_infinite_loop_times_out(humaneval_rows: list[Sample]) -> None:
    sample = humaneval_rows[0]
    task = HumanEval(timeout_s=0.5)  # the loop never ends: any timeout is waited in full
    score = task.score(sample, fenced(sample.question + "    while True:\n        pass\n"))
    assert not score.correct and score.reason.startswith("timed out")


def test_lm_eval_stop_strings_cut_the_completion(humaneval_rows: list[Sample]) -> None:
    sample = humaneval_rows[0]
    runaway = sample.meta["canonical_solution"] + "\n\ndef extra():\n    raise SystemExit(1)\n"
    assert cut_at_stop(runaway, HUMANEVAL_STOP) == sample.meta["canonical_solution"] + "\n"
    assert cut_at_stop("x = 1\nif y:\n#c", HUMANEVAL_STOP) == "x = 1"
    score = HUMANEVAL.score(sample, runaway + "\nprint(1/0)", "lm-eval")
    assert score.correct, score.reason
    assert score.extracted == sample.question + sample.meta["canonical_solution"] + "\n"


def test_mbpp_rows_load_and_a_correct_solution_passes(
    shared_data_dir: Path, real_mbpp_test: list[Sample]
) -> None:
    train = MBPP_TASK.load("train", data_dir=shared_data_dir)
    assert len(train) == 462 and len(real_mbpp_test) == 30
    assert train[0].id == "mbpp/train/511" and train[0].meta["entry_point"] == "find_Min_Sum"
    sample = real_mbpp_test[0]  # remove_Occ: drop the first and last occurrence of a character
    assert sample.question.strip() in MBPP_TASK.prompt(sample)[0]["content"]
    assert MBPP_TASK.prompt(sample, "lm-eval") == sample.question
    solution = (
        "def remove_Occ(s: str, char: str) -> str:\n"
        "    s = s.replace(char, '', 1)\n"
        "    i = s.rfind(char)\n"
        "    return s if i < 0 else s[:i] + s[i + 1 :]"
    )
    completion = solution.split("\n", 1)[1] + "\n"
    paper = MBPP_TASK.score(sample, fenced(solution))
    lm_eval = MBPP_TASK.score(sample, completion, "lm-eval")
    assert paper.correct and lm_eval.correct, (paper.reason, lm_eval.reason)


def test_original_mbpp_format_builds_lm_evals_prompt() -> None:
    row = {
        "task_id": 11,
        "text": "Write a python function to remove first and last occurrence of a given character.",
        "code": "def remove_Occ(s,ch):\r\n    s = s.replace(ch,'',1)[::-1]\r\n"
        "    return s.replace(ch,'',1)[::-1]",
        "test_list": [
            'assert remove_Occ("hello","l") == "heo"',
            'assert remove_Occ("abcda","a") == "bcd"',
            'assert remove_Occ("PHP","P") == "H"',
        ],
    }
    task = MBPP(timeout_s=5.0)
    sample = task.to_sample(row, 0, "test")
    assert sample.meta["entry_point"] == "remove_Occ" and "assert remove_Occ" in sample.reference
    prompt = task.prompt(sample, "lm-eval")
    assert isinstance(prompt, str) and prompt.startswith(mbpp_fewshot())
    assert prompt.count("[BEGIN]\n") == 4 and prompt.count("\n[DONE]\n\n") == 3
    assert prompt.endswith(f"{row['text']} Your code should pass these tests:\n\n"
                           + "\n".join(row["test_list"]) + "\n[BEGIN]\n")  # fmt: skip
    assert task.generation("lm-eval").stop == ("[DONE]",)
    assert task.generation("lm-eval").max_new_tokens == 256
    scores = task.score_many(
        [sample, sample],
        [row["code"] + "\n[DONE]\nYou are an expert", fenced(row["code"])],
        "lm-eval",
    )
    assert scores[0].correct, scores[0].reason
    assert not scores[1].correct  # the fences are not Python: lm-eval runs the raw completion
    assert task.score(sample, fenced(row["code"])).correct  # paper protocol extracts the block


def test_check_generated_accepts_a_good_sample() -> None:
    question, solution, tests = MBPP_TASK.check_generated(GOOD_ITEM)
    assert question.startswith("def double") and "return 2 * x" in solution
    assert tests == GOOD_ITEM["tests"]
    listed = MBPP_TASK.check_generated({**GOOD_ITEM, "tests": GOOD_ITEM["tests"].splitlines()})
    assert listed[2] == GOOD_ITEM["tests"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"question": " "}, "missing question"),
        ({"question": "Double a number."}, "question has no function signature"),
        ({"solution": "def double(x):\nreturn 2 * x"}, "solution does not parse"),
        ({"solution": "x = 2"}, "solution defines no function"),
        ({"solution": "def twice(x):\n    return 2 * x"}, "solution does not define double"),
        ({"tests": "double(2) == 4"}, "tests contain no assert"),
        ({"tests": "assert double(2) =="}, "tests do not parse"),
    ],
)
def test_check_generated_rejects_bad_samples(change: dict[str, str], reason: str) -> None:
    with pytest.raises(SampleRejected, match=f"^{reason}"):
        MBPP_TASK.check_generated({**GOOD_ITEM, **change})


def test_training_target_round_trips_through_the_paper_scorer() -> None:
    question, solution, tests = MBPP_TASK.check_generated(GOOD_ITEM)
    target = MBPP_TASK.training_target(solution, tests)
    assert target.startswith("```python\n") and target.endswith("\n```")
    prompt = MBPP_TASK.prompt(MBPP_TASK.training_sample(question))
    assert question in prompt[0]["content"]
    check_style = "def check(candidate):\n    assert candidate(3) == 6\n"
    samples = [MBPP_TASK.generated_sample(question, t) for t in (tests, check_style)]
    wrong = MBPP_TASK.training_target("def double(x):\n    return x + 2", tests)
    scores = MBPP_TASK.score_many(samples + samples[:1], [target, target, wrong])
    assert [s.correct for s in scores] == [True, True, False], [s.reason for s in scores]
    assert scores[0].extracted == solution + "\n"


def test_instructor_template_renders_and_its_example_is_a_valid_sample() -> None:
    text = render("le_code", question="def f():", response="oops", reference="assert f()", reason="failed: AssertionError", n=3)
    assert "def f():" in text and "assert f()" in text and "3 new coding tasks" in text
    example = json.loads(text.strip().splitlines()[-1])
    parsed = parse_reply(json.dumps(example))
    MBPP_TASK.check_generated(parsed.items[0])


def test_prose_before_the_signature_of_a_generated_question_is_not_run_as_code() -> None:
    task = get_task("mbpp")
    question = 'Write a function that adds two numbers.\nfrom math import fsum\n\ndef add(a, b):\n    """Add."""\n'
    sample = task.generated_sample(question, "assert add(1, 2) == 3\nassert fsum([add(1, 1)]) == 2", "g")
    score = task.score(sample, task.training_target("def add(a, b):\n    return a + b", ""))
    assert score.correct, score.reason  # the import line is kept, the prose is not
