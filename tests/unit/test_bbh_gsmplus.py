"""BBH and GSM-Plus: loading, both protocols' prompts, answer extraction and scoring.

The lm-eval expectations are written by hand from lm-evaluation-harness 0.4.13's
``bbh/cot_fewshot`` yaml (description + three "Q: ...\\nA: Let's think step by step.\\n"
shots, ``until: ["</s>", "Q", "\\n\\n"]``, ``max_gen_toks: 1024``, the ``get-answer``
regex ``(?<=the answer is )(.*)(?=.)``) and the official cot-prompt files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lai.errors import ConfigError, DataError
from lai.records import Sample
from lai.tasks import get_task
from lai.tasks.bbh import BBH, SUBTASKS
from lai.tasks.gsm8k import LM_EVAL_STOP as GSM8K_STOP
from lai.tasks.gsm8k import lm_eval_fewshot
from lai.tasks.gsm8k_plus import GSMPlus, gold_number

CUE = "A: Let's think step by step."


@pytest.fixture(scope="module")
def bbh(shared_data_dir: Path) -> tuple[BBH, dict[str, list[Sample]]]:
    task = get_task("bbh")
    assert isinstance(task, BBH)
    by_subtask: dict[str, list[Sample]] = {}
    for sample in task.load("test", data_dir=shared_data_dir):
        by_subtask.setdefault(str(task.group(sample)), []).append(sample)
    return task, by_subtask


def test_bbh_loads_every_subtask(bbh: tuple[BBH, dict[str, list[Sample]]]) -> None:
    _task, by_subtask = bbh
    assert len(SUBTASKS) == 27 and set(by_subtask) == set(SUBTASKS)
    assert sum(len(rows) for rows in by_subtask.values()) == 135
    assert all(len(rows) == 5 for rows in by_subtask.values())
    first = by_subtask["date_understanding"][0]
    assert first.id == "bbh/date_understanding/0" and first.reference == "(B)"
    assert first.meta["subtask"] == "date_understanding"
    assert first.question.startswith("Today is Christmas Eve of 1937.")


def test_bbh_lm_eval_prompt_is_what_lm_eval_builds(
    bbh: tuple[BBH, dict[str, list[Sample]]],
) -> None:
    task, by_subtask = bbh
    sample = by_subtask["boolean_expressions"][0]
    assert sample.question == "not ( True ) and ( True ) is"
    prompt = task.prompt(sample, "lm-eval")
    assert isinstance(prompt, str)
    # description + "\n\n", then the shots (target delimiter "", fewshot delimiter "\n\n").
    assert prompt.startswith(
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: not ( ( not not True ) ) is\n"
        f"{CUE}\n"
        "Remember that (i) expressions inside brackets are always evaluated first"
    )
    assert prompt.endswith(
        "Plugging in A, we get: Z = not not ( A ) = not not (True) = not not False = True. "
        "So the answer is True.\n\n"
        "Q: not ( True ) and ( True ) is\n"
        f"{CUE}\n"
    )
    assert prompt.count("\nQ: ") == 4 and "canary" not in prompt and "-----" not in prompt
    # lm-eval's yaml starts each target on a new line even where the file has a space.
    sports = task.prompt(by_subtask["sports_understanding"][0], "lm-eval")
    assert f"{CUE}\nBam Adebayo is an American basketball player." in sports


def test_bbh_paper_prompt_is_the_official_cot_prompt(
    bbh: tuple[BBH, dict[str, list[Sample]]],
) -> None:
    task, by_subtask = bbh
    sample = by_subtask["sports_understanding"][0]
    [message] = task.prompt(sample)  # type: ignore[misc]
    assert message["role"] == "user"
    content = message["content"]
    assert content.startswith("Determine whether an artificially constructed sentence")
    assert f"{CUE} Bam Adebayo" in content  # the file's own layout, untouched
    assert content.endswith(f"\n\nQ: {sample.question}\n{CUE}")
    assert "canary" not in content


def test_bbh_generation_settings() -> None:
    lm_eval = BBH().generation("lm-eval")
    assert lm_eval.stop == ("</s>", "Q", "\n\n") and lm_eval.max_new_tokens == 1024
    assert BBH().generation("paper").max_new_tokens == 1024


@pytest.mark.parametrize(
    ("response", "paper", "lm_eval"),
    [
        ("The date tomorrow is 12/25/1937. So the answer is (B).", True, True),
        ("So the answer is (A).", False, False),
        ("Tomorrow is Christmas.\nSo the answer is: **B**", True, False),
        ("The answer is (B) 12/25/1937.", True, False),  # lm-eval's regex is lower-case "the"
        ("So the answer is (B)", True, False),  # lm-eval's (?=.) drops the last character
        ("So the answer is (A). Wait, the answer is (B).", True, False),  # lm-eval: first match
    ],
)
def test_bbh_multiple_choice_answers(
    bbh: tuple[BBH, dict[str, list[Sample]]], response: str, paper: bool, lm_eval: bool
) -> None:
    task, by_subtask = bbh
    sample = by_subtask["date_understanding"][0]
    assert task.score(sample, response).correct is paper
    assert task.score(sample, response, "lm-eval").correct is lm_eval


def test_bbh_reasons_name_both_answers(bbh: tuple[BBH, dict[str, list[Sample]]]) -> None:
    task, by_subtask = bbh
    sample = by_subtask["date_understanding"][0]
    for protocol in ("paper", "lm-eval"):
        wrong = task.score(sample, "So the answer is (A).", protocol)
        assert (wrong.extracted, wrong.reason) == ("(A)", "answered '(A)', expected '(B)'")
    right = task.score(sample, "So the answer is B.")
    assert right.extracted == "(B)" and right.reason == "answered '(B)', matches"


@pytest.mark.parametrize(
    ("subtask", "index", "response", "paper", "lm_eval"),
    [
        ("object_counting", 0, "That is 8 instruments. So the answer is 8.", True, True),
        ("object_counting", 0, "So the answer is 6.", False, False),
        ("object_counting", 0, "So the answer is 8 musical instruments.", True, False),
        ("word_sorting", 0, "So the answer is syndrome therefrom.", True, True),
        ("word_sorting", 0, "So the answer is Syndrome, therefrom.", True, False),
        ("word_sorting", 0, "So the answer is therefrom syndrome.", False, False),
        ("dyck_languages", 1, "So the answer is ] ] >.", True, True),
        ("dyck_languages", 1, "So the answer is ]]>.", True, False),
        ("dyck_languages", 1, "So the answer is ] >.", False, False),
        ("sports_understanding", 1, "So the answer is yes.", True, True),
        ("sports_understanding", 1, "So the answer is Yes. It is plausible.", True, False),
        ("multistep_arithmetic_two", 3, "So the answer is -11520.", True, True),
    ],
)
def test_bbh_free_form_answers(
    bbh: tuple[BBH, dict[str, list[Sample]]],
    subtask: str,
    index: int,
    response: str,
    paper: bool,
    lm_eval: bool,
) -> None:
    task, by_subtask = bbh
    sample = by_subtask[subtask][index]
    assert task.score(sample, response).correct is paper
    assert task.score(sample, response, "lm-eval").correct is lm_eval


def test_bbh_response_without_answer_phrase(bbh: tuple[BBH, dict[str, list[Sample]]]) -> None:
    task, by_subtask = bbh
    sample = by_subtask["navigate"][0]
    paper = task.score(sample, "Take 3 steps forward, then 3 back: No.")
    assert not paper.correct and paper.extracted is None
    assert paper.reason == "no 'So the answer is' phrase found"
    lm_eval = task.score(sample, "I am not sure.", "lm-eval")
    assert not lm_eval.correct and "no 'the answer is' phrase" in lm_eval.reason
    # An invented next exemplar is not read as the answer.
    invented = task.score(sample, "So the answer is No.\n\nQ: other\nA: So the answer is Yes.")
    assert invented.correct


def test_bbh_missing_cot_prompts_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "bbh").mkdir()
    row = {"input": "True and False is", "target": "False"}
    (tmp_path / "bbh" / "boolean_expressions.sample.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="chain-of-thought prompts not found") as error:
        BBH().load("test", data_dir=tmp_path)
    assert str(tmp_path / "bbh" / "cot-prompts") in str(error.value)


def test_bbh_single_file_takes_its_subtask_from_the_name(shared_data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "word_sorting.jsonl"
    path.write_text(json.dumps({"input": "Sort: b a", "target": "a b"}) + "\n")
    [sample] = BBH().load("test", path=path, data_dir=shared_data_dir)
    assert sample.id == "bbh/word_sorting/0" and sample.meta["subtask"] == "word_sorting"
    prompt = BBH().prompt(sample, "lm-eval")
    assert isinstance(prompt, str) and prompt.startswith("Sort a list of words.\n\n")
    bad = tmp_path / "not_a_subtask.jsonl"
    bad.write_text(path.read_text())
    with pytest.raises(DataError, match="unknown BBH subtask 'not_a_subtask'"):
        BBH().load("test", path=bad, data_dir=shared_data_dir)


# ---- GSM-Plus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsmplus(shared_data_dir: Path) -> tuple[GSMPlus, list[Sample]]:
    task = get_task("gsm8k_plus")
    assert isinstance(task, GSMPlus)
    return task, task.load("test", data_dir=shared_data_dir)


def test_gsmplus_loads_rows_with_types_as_groups(
    shared_data_dir: Path, gsmplus: tuple[GSMPlus, list[Sample]]
) -> None:
    task, samples = gsmplus
    rows = [json.loads(line) for line in (shared_data_dir / "gsm8k_plus" / "test_sample.jsonl").open()]
    assert len(samples) == len(rows) == 30
    assert [task.group(s) for s in samples] == [row["type"] for row in rows]
    assert samples[0].id == "gsm8k_plus/test/0" and samples[0].reference == "220"
    assert samples[5].reference == "36"  # gold "36" although the solution ends "#### 36%"
    assert samples[16].reference == "11.7"  # "11.7" (solution: "#### 11.70.")


def test_gsmplus_prompts_are_gsm8k_s(gsmplus: tuple[GSMPlus, list[Sample]]) -> None:
    task, samples = gsmplus
    sample = samples[0]
    assert task.prompt(sample, "lm-eval") == lm_eval_fewshot() + f"Q: {sample.question}\nA:"
    assert task.generation("lm-eval").stop == GSM8K_STOP
    [message] = task.prompt(sample)  # type: ignore[misc]
    assert sample.question in message["content"] and "The answer is N" in message["content"]


def test_gsmplus_scores_real_rows_under_both_protocols(
    gsmplus: tuple[GSMPlus, list[Sample]],
) -> None:
    task, samples = gsmplus
    first, decimal = samples[0], samples[16]
    assert task.score(first, "160 + 60 = 220.\nThe answer is 220.").correct
    wrong = task.score(first, "The answer is 200.")
    assert not wrong.correct and wrong.reason == "final answer 200, expected 220"
    right = task.score(first, "160 + 60 = 220. The answer is 220.", "lm-eval")
    assert right.correct and right.metrics == {"strict-match": True, "flexible-extract": True}
    loose = task.score(first, "So Hannah smashes 220 windows.", "lm-eval")
    assert not loose.correct and loose.metrics == {"strict-match": False, "flexible-extract": True}
    assert task.score(decimal, "The answer is $11.70.").correct
    assert task.score(decimal, "17.70 - 6.00 = 11.7. The answer is 11.7.", "lm-eval").correct
    assert not task.score(decimal, "The answer is 12.", "lm-eval").correct


@pytest.fixture()
def hub_rows(tmp_path: Path) -> Path:
    """Rows in the hub's layout (qintongli/GSM-Plus), one of them a critical-thinking item."""
    rows = [
        {
            "question": "A rink has red cars and 2 fewer green cars. It has 75 cars. How many red?",
            "solution": "We don't know how many red cars the rink has. \n#### None",
            "answer": "None",
            "perturbation_type": "critical thinking",
        },
        {
            "question": "A rink has 20 red cars and 3 fewer green cars. How many cars?",
            "solution": "20 + 17 = 37\n#### 37",
            "answer": "37",
            "perturbation_type": "digit expansion",
        },
    ]
    path = tmp_path / "gsmplus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    ("response", "correct", "extracted"),
    [
        (
            "The question does not say how many red cars there are, so it cannot be determined.",
            True,
            "None",
        ),
        ("There is not enough information to answer.\nThe answer is None.", True, "None"),
        ("We don't know the number of red cars; assuming 12, the answer is 23.", False, "23"),
        ("Red cars: 12, green: 10, so 52 in all.", False, None),
    ],
)
def test_gsmplus_critical_thinking_paper(
    hub_rows: Path, response: str, correct: bool, extracted: str | None
) -> None:
    task = GSMPlus()
    unanswerable, answerable = task.load("test", path=hub_rows)
    assert (unanswerable.reference, task.group(unanswerable)) == ("None", "critical thinking")
    assert (answerable.reference, task.group(answerable)) == ("37", "digit expansion")
    score = task.score(unanswerable, response)
    assert (score.correct, score.extracted) == (correct, extracted)


def test_gsmplus_critical_thinking_lm_eval_matches_harness(hub_rows: Path) -> None:
    # lm-eval's filters only extract numbers, so "None" golds can never be matched there.
    task = GSMPlus()
    unanswerable, answerable = task.load("test", path=hub_rows)
    score = task.score(unanswerable, "We cannot know. The answer is None.", "lm-eval")
    assert not score.correct and score.metrics == {"strict-match": False, "flexible-extract": False}
    assert task.score(answerable, "20 + 17 = 37. The answer is 37.", "lm-eval").correct


@pytest.mark.parametrize(
    ("gold", "expected"),
    [("220", "220"), ("1,000", "1000"), ("11.70", "11.7"), ("36%", "36"), ("3/4", "0.75")],
)
def test_gsmplus_gold_is_written_like_extracted_numbers(gold: str, expected: str) -> None:
    assert gold_number(gold) == expected


def test_gsmplus_is_evaluation_only() -> None:
    task = GSMPlus()
    assert task.sample_schema == {} and task.instructor_templates == {} and task.resolve_rule is None
    with pytest.raises(ConfigError, match="evaluation only"):
        task.instructor_template("le")
    with pytest.raises(ConfigError, match="evaluation only"):
        task.check_generated({"question": "q", "solution": "s", "answer": 1})
    with pytest.raises(ConfigError, match="evaluation only"):
        task.training_target("s", "1")
