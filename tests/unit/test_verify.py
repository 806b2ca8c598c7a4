"""The checks a generated sample goes through before training, on crafted good and bad samples.

* format and provenance: :func:`lai.quality.parse.parse_records` on instructor records;
* duplicates, decontamination, execution, re-solving: :mod:`lai.quality.verify`, each check
  on its own and then :func:`verify_stage` (the verify stage's composition) with every switch;
* diagnosis groups: :func:`lai.quality.diagnoses.group_by_diagnosis`.

Code runs in the real sandbox (a few seconds: one program loops until the 2 s timeout).
Expected outcomes are worked out here, not read back from the code under test: which
samples share a 13-gram with a GSM8K test item is counted with a small n-gram helper of
this file, which solutions pass their tests is checked by running the safe ones in this
process, which re-solves agree is annotated next to each reply. The embedder is the
hashing one (bag of words), so which texts are "near" is easy to reason about; the
premises are asserted rather than assumed. The dedup/decontamination helpers themselves
are tested in ``test_dedup_decontam.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from lai.config import DecontaminationCheck, DedupCheck, ResolveCheck, VerifyConfig
from lai.embedding import HashingEmbedder
from lai.instructor.base import InstructRequest, record_for
from lai.quality.decontaminate import ContaminationIndex
from lai.quality.diagnoses import NO_DIAGNOSIS, group_by_diagnosis
from lai.quality.parse import parse_records
from lai.quality.verify import (
    apply_resolve,
    check_contamination,
    check_duplicates,
    check_execution,
    check_resolve,
    local_checks,
    resolve_requests,
    resolved_answer,
)
from lai.records import Attempt, GeneratedSample, InstructRecord, Sample
from lai.tasks import get_task


def verify_samples(
    samples: list[GeneratedSample], tasks: dict[str, Any], config: VerifyConfig, *, resolve: Any, **factories: Any
) -> tuple[list[GeneratedSample], dict[str, object]]:
    """What the verify stage does (lai.pipeline.Pipeline.verify), with ``resolve`` in the
    place of the instructor session's send."""
    samples, summary = local_checks(samples, tasks, config, **factories)
    r = config.resolve
    requests = resolve_requests(samples, tasks, r.n, r.temperature, r.max_tokens) if r.enabled else []
    records = resolve(requests) if requests else []
    return apply_resolve(samples, summary, tasks, config, requests, records)


def make_tasks() -> dict[str, Any]:
    code = get_task("mbpp")
    code.timeout_s = 2  # type: ignore[attr-defined]  # the looping solution costs this much
    return {"gsm8k": get_task("gsm8k"), "mbpp": code, "mmlu": get_task("mmlu")}


TASKS = make_tasks()
CHECK_KEYS = ("dedup", "decontaminate", "execute", "resolve")

# ---- texts --------------------------------------------------------------------------------

APPLES = (
    "Tom picks 12 apples every morning from the orchard behind his grandmother's farm. "
    "He gives 5 apples to his neighbour, bakes a pie with 3 more, and sells the rest at "
    "the market for $2 each. How much money does Tom make from the apples in one week?"
)
# The same problem, case, punctuation and spacing changed: an exact duplicate.
APPLES_SHOUTED = APPLES.upper().replace(",", " ;").replace("?", "!!")
# A name and a number swapped: a near duplicate.
APPLES_REWORDED = APPLES.replace("Tom", "Liam").replace("12 apples", "14 apples")
PAINT = (
    "Maria paints a fence with 24 boards. Each board needs two coats of paint and one can "
    "covers 8 coats. How many cans of paint must she buy?"
)
TRAIN_SPEED = (
    "A freight train leaves the station at 60 kilometres per hour and a passenger train "
    "follows two hours later at 90 kilometres per hour. After how many hours does the "
    "passenger train catch up?"
)
POOL = [
    (
        "gsm8k/train/7",
        "A library lends 45 books on Monday and twice as many on Tuesday. On Wednesday it "
        "lends 10 fewer than on Tuesday. How many books does it lend over the three days?",
    ),
    (
        "gsm8k/train/8",
        "Rosa saves 15 dollars every week for a bicycle that costs 240 dollars. Her uncle "
        "gives her 60 dollars on her birthday. How many weeks must Rosa save to buy it?",
    ),
    (
        "gsm8k/train/9",
        "A bakery bakes 36 loaves each hour for 8 hours and throws away 20 loaves that burn. "
        "It sells each of the rest for 3 dollars. How much money does the bakery take in?",
    ),
]
#: cosine threshold for the hashing embedder: a name or a number swapped in a 40-word
#: problem stays far above it, different problems share few words and stay far below.
HASH_THRESHOLD = 0.8

CODE_Q = 'def add(a, b):\n    """Return the sum of a and b."""\n'
CODE_TESTS = "assert add(1, 2) == 3\nassert add(-4, 4) == 0\nassert add(10, 5) == 15\n"
CODE_RIGHT = "def add(a, b):\n    return a + b\n"
CODE_WRONG = "def add(a, b):\n    return a - b\n"
CODE_RAISES = 'def add(a, b):\n    raise ValueError("no adding today")\n'
CODE_LOOPS = "def add(a, b):\n    while True:\n        pass\n"


# ---- helpers ------------------------------------------------------------------------------


def instruct_record(
    rid: str,
    task: str,
    items: list[dict[str, Any]],
    *,
    strategy: str = "le",
    source_ids: list[str] | None = None,
    status: str = "ok",
    template: str = "le_math",
    template_hash: str = "0123456789ab",
    model: str = "instructor-x",
) -> InstructRecord:
    return InstructRecord(
        id=rid,
        source_ids=source_ids if source_ids is not None else [f"{task}/train/1"],
        task=task,
        strategy=strategy,
        n_requested=len(items),
        messages=[{"role": "user", "content": "Write new practice problems."}],
        status=status,
        reply=json.dumps({"diagnosis": "the student slips", "samples": items})
        if status == "ok"
        else "",
        error=None if status == "ok" else "HTTP 500: boom",
        model=model,
        template=template,
        template_hash=template_hash,
    )


def parse_one(task: str, item: dict[str, Any], check_format: bool = True) -> GeneratedSample:
    (sample,) = parse_records(
        [instruct_record(f"le:{task}", task, [item])], TASKS, {}, 1, check_format=check_format
    )
    return sample


def sample(
    sid: str,
    question: str,
    answer: str = "6",
    *,
    task: str = "gsm8k",
    solution: str = "worked out step by step",
    strategy: str = "le",
    kept: bool = True,
    drop_reason: str | None = None,
) -> GeneratedSample:
    return GeneratedSample(
        id=sid,
        request_id=sid.split("#")[0],
        source_ids=[],
        task=task,
        question=question,
        solution=solution,
        answer=answer,
        kept=kept,
        drop_reason=drop_reason,
        strategy=strategy,
    )


def code_sample(sid: str, solution: str, strategy: str = "le", **kwargs: Any) -> GeneratedSample:
    return sample(
        sid, CODE_Q, CODE_TESTS, task="mbpp", solution=solution, strategy=strategy, **kwargs
    )


def cosine(a: str, b: str) -> float:
    vectors = HashingEmbedder().embed([a, b])
    return float(vectors[0] @ vectors[1])


def harness_words(text: str) -> list[str]:
    """lm-eval's decontamination words: lowercase, punctuation deleted, split on spaces."""
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split()


def shares_13gram(a: str, b: str) -> bool:
    wa, wb = harness_words(a), harness_words(b)
    grams = {tuple(wa[i : i + 13]) for i in range(len(wa) - 12)}
    return any(tuple(wb[i : i + 13]) in grams for i in range(len(wb) - 12))


def passes_in_process(solution: str, tests: str) -> bool:
    """Run a solution known to be safe (no loop) right here: the expectation for the sandbox."""
    scope: dict[str, Any] = {}
    try:
        exec(solution + "\n" + tests, scope)  # noqa: S102 - our own crafted code
    except Exception:
        return False
    return True


def by_id(samples: list[GeneratedSample]) -> dict[str, GeneratedSample]:
    return {s.id: s for s in samples}


# ---- format (parse stage) -----------------------------------------------------------------

MATH_GOOD = {
    "question": "A shop sells 3 pens for $2 each. How much do the 3 pens cost in dollars?",
    "solution": "3 * 2 = 6",
    "answer": 6,
}
MATH_GOOD_COMMA = {
    "question": "A farm has 250 hens and each hen lays 4 eggs a week. How many eggs a week?",
    "solution": "250 * 4 = 1000",
    "answer": "1,000",
}
CHOICE_OPTIONS = {"A": "Venus", "B": "Mars", "C": "Jupiter", "D": "Saturn"}
CHOICE_GOOD = {
    "question": "Which planet is known as the red planet?",
    "options": CHOICE_OPTIONS,
    "answer": "(b)",
    "explanation": "Iron oxide on its surface makes Mars look red.",
}
CODE_GOOD = {"question": CODE_Q, "solution": CODE_RIGHT, "tests": CODE_TESTS}

GOOD = {
    "math": ("gsm8k", MATH_GOOD, MATH_GOOD["question"], "6"),
    "math, answer with a thousands comma": (
        "gsm8k",
        MATH_GOOD_COMMA,
        MATH_GOOD_COMMA["question"],
        "1000",
    ),
    "multiple choice": (
        "mmlu",
        CHOICE_GOOD,
        CHOICE_GOOD["question"] + "\n" + "\n".join(f"{k}. {v}" for k, v in CHOICE_OPTIONS.items()),
        "B",
    ),
    "code": ("mbpp", CODE_GOOD, CODE_Q.strip(), CODE_TESTS.strip()),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_format_keeps_good_samples(case: str) -> None:
    task, item, question, answer = GOOD[case]
    got = parse_one(task, item)
    assert got.kept, got.drop_reason
    assert (got.question, got.answer) == (question, answer)
    assert got.checks == {"format": "ok"}


BAD = {
    # math
    "math: no numbers": (
        "gsm8k",
        {
            "question": "A shop sells some pens for a few dollars each. How much do they cost?",
            "solution": "It depends on the pens.",
            "answer": 6,
        },
        "no numbers",
    ),
    "math: answer is a word": (
        "gsm8k",
        {
            "question": "Ann has 4 apples and buys 5 more. How many apples does she have?",
            "solution": "4 + 5 apples",
            "answer": "several",
        },
        "not a number",
    ),
    # multiple choice
    "choice: 3 options": (
        "mmlu",
        {**CHOICE_GOOD, "options": {"A": "Venus", "B": "Mars", "C": "Jupiter"}},
        "4 options",
    ),
    "choice: duplicate options": (
        "mmlu",
        {**CHOICE_GOOD, "options": {"A": "Mars", "B": "mars ", "C": "Venus", "D": "Earth"}},
        "not distinct",
    ),
    "choice: two answer letters": ("mmlu", {**CHOICE_GOOD, "answer": "A, B"}, "one of A-D"),
    "choice: letter outside A-D": ("mmlu", {**CHOICE_GOOD, "answer": "E"}, "one of A-D"),
    # code
    "code: no function": (
        "mbpp",
        {**CODE_GOOD, "question": "Write a function that adds two numbers and returns the sum."},
        "function signature",
    ),
    "code: solution syntax error": (
        "mbpp",
        {**CODE_GOOD, "solution": "def add(a, b)\n    return a + b\n"},
        "does not parse",
    ),
    "code: no tests": ("mbpp", {**CODE_GOOD, "tests": ""}, "no assert"),
    "code: tests without asserts": (
        "mbpp",
        {**CODE_GOOD, "tests": "print(add(1, 2))"},
        "no assert",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_format_drops_bad_samples_saying_why(case: str) -> None:
    task, item, problem = BAD[case]
    got = parse_one(task, item)
    assert not got.kept
    assert got.drop_reason is not None and got.drop_reason.startswith("format: ")
    assert problem in got.drop_reason, got.drop_reason


@pytest.mark.parametrize(
    "case", ["math: answer is a word", "choice: 3 options", "code: no tests", "math: no numbers"]
)
def test_format_switched_off_keeps_a_rejected_sample_and_says_so(case: str) -> None:
    task, item, problem = BAD[case]
    rejected = parse_one(task, item).drop_reason or ""
    got = parse_one(task, item, check_format=False)
    assert got.kept, got.drop_reason
    assert got.checks["format"].startswith("not checked")
    assert rejected.removeprefix("format: ") in got.checks["format"]  # the same rejection
    assert got.question.startswith(str(item["question"]).strip())
    if task == "mmlu":  # the options travel in the question, as for a checked sample
        for letter, text in item["options"].items():
            assert f"{letter}. {text}" in got.question.splitlines()
        assert got.solution == item["explanation"]
    if task == "mbpp":
        assert got.solution == item["solution"].strip()
    if task == "gsm8k":
        assert got.answer == str(item["answer"])


@pytest.mark.parametrize(
    "item",
    [
        {"question": "", "solution": "3 + 4 = 7", "answer": 7},  # nothing asked
        {"question": "Ann has 4 cats and 3 dogs. How many pets?"},  # nothing to learn
    ],
)
def test_format_switched_off_still_drops_a_sample_with_nothing_to_train_on(
    item: dict[str, Any],
) -> None:
    got = parse_one("gsm8k", item, check_format=False)
    assert not got.kept and (got.drop_reason or "").startswith("format: ")


def test_provenance_is_carried_from_the_instruct_record() -> None:
    def item(k: int) -> dict[str, Any]:
        return {
            "question": f"A crate holds {k} jars and a van takes 9 crates. How many jars?",
            "solution": f"{k} * 9",
            "answer": 9 * k,
        }

    lec = instruct_record(
        "lec:gsm8k/train/5",
        "gsm8k",
        [item(2), item(3)],
        strategy="lec",
        source_ids=["gsm8k/train/5", "gsm8k/train/8", "gsm8k/train/9"],
        template="lec_math",
        template_hash="aaaaaaaaaaaa",
        model="big-instructor",
    )
    random = instruct_record(
        "random:gsm8k/train/3",
        "gsm8k",
        [item(4)],
        strategy="random",
        source_ids=["gsm8k/train/3"],
        template="random_math",
        template_hash="bbbbbbbbbbbb",
    )
    le = instruct_record(
        "le:gsm8k/train/4", "gsm8k", [item(5)], source_ids=["gsm8k/train/4"], status="failed"
    )
    samples = by_id(parse_records([lec, random, le], TASKS, {}, iteration=2))
    assert set(samples) == {
        "lec:gsm8k/train/5#0",
        "lec:gsm8k/train/5#1",
        "random:gsm8k/train/3#0",
        "le:gsm8k/train/4#request",
    }
    for key in ("lec:gsm8k/train/5#0", "lec:gsm8k/train/5#1"):
        got = samples[key]
        assert got.kept and got.iteration == 2
        assert (got.strategy, got.error_id, got.neighbour_ids, got.row_id) == (
            "lec",
            "gsm8k/train/5",
            ["gsm8k/train/8", "gsm8k/train/9"],
            "",
        )
        assert (got.template, got.template_hash, got.instructor_model) == (
            "lec_math",
            "aaaaaaaaaaaa",
            "big-instructor",
        )
        assert (got.request_id, got.source_ids) == (lec.id, lec.source_ids)
    rand = samples["random:gsm8k/train/3#0"]
    assert (rand.strategy, rand.error_id, rand.neighbour_ids, rand.row_id) == (
        "random",
        "",
        [],
        "gsm8k/train/3",
    )
    assert (rand.template, rand.template_hash, rand.instructor_model) == (
        "random_math",
        "bbbbbbbbbbbb",
        "instructor-x",
    )
    failed = samples["le:gsm8k/train/4#request"]  # a failed request still says where it came from
    assert not failed.kept and (failed.error_id, failed.strategy) == ("gsm8k/train/4", "le")


# ---- execution (code, real sandbox) -------------------------------------------------------


def test_execution_keeps_passing_code_and_drops_wrong_raising_and_looping_code() -> None:
    samples = [
        code_sample("le:c#0", CODE_RIGHT),
        code_sample("le:c#1", CODE_WRONG),
        code_sample("le:c#2", CODE_RAISES),
        code_sample("le:c#3", CODE_LOOPS),
        # real rows are the dataset's own and are not run, even when they would fail
        code_sample("original:mbpp/train/1", CODE_WRONG, strategy="original"),
        code_sample("nearest:mbpp/train/2", CODE_RAISES, strategy="nearest"),
        # already dropped: left alone
        code_sample(
            "le:c#4", CODE_WRONG, kept=False, drop_reason="duplicate: exact copy of le:c#1"
        ),
        sample("le:m#0", MATH_GOOD["question"]),  # not code
    ]
    expected_pass = {
        "le:c#0": passes_in_process(CODE_RIGHT, CODE_TESTS),
        "le:c#1": passes_in_process(CODE_WRONG, CODE_TESTS),
        "le:c#2": passes_in_process(CODE_RAISES, CODE_TESTS),
        "le:c#3": False,  # never returns
    }
    assert expected_pass == {"le:c#0": True, "le:c#1": False, "le:c#2": False, "le:c#3": False}
    out = check_execution(samples, TASKS)
    assert [s.id for s in out] == [s.id for s in samples]
    got = by_id(out)
    for sid, passes in expected_pass.items():
        assert got[sid].kept is passes, (sid, got[sid].drop_reason)
        assert "execute" in got[sid].checks
        if not passes:
            reason = got[sid].drop_reason or ""
            assert reason.startswith("failed verification")
            assert got[sid].checks["execute"] in reason  # the sandbox's reason, in the drop
    assert "AssertionError" in got["le:c#1"].checks["execute"]
    assert "ValueError" in got["le:c#2"].checks["execute"]
    assert "timed out" in got["le:c#3"].checks["execute"]
    for sid in ("original:mbpp/train/1", "nearest:mbpp/train/2", "le:c#4", "le:m#0"):
        assert got[sid] == by_id(samples)[sid]  # not run, not touched


# ---- re-solving (math, multiple choice) ---------------------------------------------------

SOLUTION_TEXT = "SECRET-SOLUTION-TEXT the stated working"


def test_resolve_requests_ask_n_times_per_math_and_choice_sample() -> None:
    choice_question = GOOD["multiple choice"][2]
    samples = [
        sample("le:a#0", MATH_GOOD["question"], "6", solution=SOLUTION_TEXT),
        sample("le:a#1", MATH_GOOD_COMMA["question"], "1000", solution=SOLUTION_TEXT),
        sample("le:b#0", choice_question, "B", task="mmlu", solution=SOLUTION_TEXT),
        code_sample("le:c#0", CODE_RIGHT),  # code is executed, not re-solved
        sample("original:gsm8k/train/1", PAINT, "6", strategy="original"),
        sample("nearest:mmlu/train/1", choice_question, "B", task="mmlu", strategy="nearest"),
        sample("le:a#2", TRAIN_SPEED, "4", kept=False, drop_reason="format: x"),
    ]
    n = 3
    requests = resolve_requests(samples, TASKS, n, temperature=0.6, max_tokens=200)
    wanted = {"le:a#0": "resolve_math", "le:a#1": "resolve_math", "le:b#0": "resolve_choice"}
    assert len(requests) == n * len(wanted)
    assert len({r.id for r in requests}) == len(requests)
    questions = by_id(samples)
    for sid, template in wanted.items():
        mine = [r for r in requests if r.source_ids == [sid]]
        assert len(mine) == n
        assert sorted(r.extra["sample_index"] for r in mine) == list(range(n))
        text = resources.files("lai.instructor.prompts").joinpath(f"{template}.txt").read_text()
        for request in mine:
            assert request.task == questions[sid].task and request.n_requested == 1
            assert request.template == template
            assert request.template_hash == hashlib.sha256(text.encode()).hexdigest()[:12]
            assert (request.extra["temperature"], request.extra["max_tokens"]) == (0.6, 200)
            content = request.messages[0]["content"]
            assert questions[sid].question in content
            assert SOLUTION_TEXT not in content  # solved without seeing the sample's working
            assert request.schema is not None and "answer" in request.schema["properties"]


# (reply, what a person reads as its answer; None: no answer can be read from it)
RESOLVED = {
    "math": [
        ('{"reasoning": "250 * 4", "answer": 1000}', "1000"),
        ('{"reasoning": "250 * 4", "answer": "1,000"}', "1000"),
        ('{"reasoning": "3 * 4", "answer": "$12.00"}', "12"),
        ('{"reasoning": "3 * 4", "answer": 12.0}', "12"),
        ('{"reasoning": "7 - 10.5", "answer": -3.5}', "-3.5"),
        (
            'Sure, here it is:\n```json\n{"reasoning": "2 + 5", "answer": 7}\n```\nHope it helps!',
            "7",
        ),
        ('{"reasoning": "x", "answer": "The answer is 42 apples"}', "42"),
        # cut off by the token limit after the answer: not JSON, the answer is still there
        ('{"reasoning": "250 hens, 4 each: 1,000", "answer": "1,000"', "1000"),
        ('{"answer": "1,000", "reasoning": "250 hens times 4 eggs', "1000"),
        ('{"reasoning": "2 + 3", "answer": 5, "check": ', "5"),
        ('{"reasoning": "x", "answer": "seven"}', None),
        ('{"reasoning": "x", "answer": null}', None),
        ("I am not sure how to solve this one.", None),
        ("", None),
    ],
    "choice": [
        ('{"reasoning": "x", "answer": "B"}', "B"),
        ('{"reasoning": "x", "answer": "(B)"}', "B"),
        ('{"reasoning": "x", "answer": "b"}', "B"),
        ('{"reasoning": "x", "answer": "(c)"}', "C"),
        ('{"reasoning": "x", "answer": "D. Saturn"}', "D"),
        ('{"answer": "(A)", "reasoning": "cut off', "A"),
        ('{"reasoning": "x", "answer": "E"}', None),
        ("no idea", None),
    ],
}


@pytest.mark.parametrize(
    "family, reply, expected",
    [(family, reply, expected) for family, cases in RESOLVED.items() for reply, expected in cases],
)
def test_resolved_answer_reads_and_normalises(
    family: str, reply: str, expected: str | None
) -> None:
    task = get_task({"math": "gsm8k", "choice": "mmlu"}[family])
    assert resolved_answer(reply, task) == expected


FAILED = object()  # a failed request in place of a reply

# sample id -> (task, stated answer, replies, how many replies give the stated answer)
VOTES: dict[str, tuple[str, str, list[Any], int]] = {
    "le:m#0": (
        "gsm8k",
        "1000",
        [
            '{"reasoning": "250 * 4", "answer": "1,000"}',
            '{"reasoning": "250 * 4", "answer": 1000}',
            '{"reasoning": "oops", "answer": 900}',
        ],
        2,
    ),
    "le:m#1": (
        "gsm8k",
        "12",
        ['```json\n{"reasoning": "3 * 4", "answer": "$12.00"}\n```', '{"answer": 13}', FAILED],
        1,
    ),
    "le:m#2": (  # failed and unreadable replies count against
        "gsm8k",
        "5",
        ['{"reasoning": "2 + 3", "answer": 5}', "I am not sure how to solve this one.", FAILED],
        1,
    ),
    "le:m#3": (  # both right answers cut off before the closing brace
        "gsm8k",
        "1000",
        [
            '{"reasoning": "250 * 4", "answer": "1,000"',
            '{"reasoning": "250 * 4", "answer": "1,000", "note": ',
            '{"answer": 7}',
        ],
        2,
    ),
    "le:m#4": ("gsm8k", "4", ['{"reasoning": "2 + 2", "answer": 4}'], 1),  # 2 replies missing
    "le:c#0": (
        "mmlu",
        "B",
        [
            '{"reasoning": "x", "answer": "(B)"}',
            '{"reasoning": "x", "answer": "b"}',
            '{"reasoning": "x", "answer": "C"}',
        ],
        2,
    ),
    "le:c#1": (
        "mmlu",
        "A",
        [
            '{"reasoning": "x", "answer": "(B)"}',
            '{"reasoning": "x", "answer": "A"}',
            '{"reasoning": "x", "answer": "E"}',
        ],
        1,
    ),
    # the format check was off, so the stated answers were never normalised
    "le:u#0": ("gsm8k", "$1,000", ['{"answer": 1000}', '{"answer": "1000"}', '{"answer": 5}'], 2),
    "le:u#1": ("mmlu", "(b)", ['{"answer": "B"}', '{"answer": "B"}', '{"answer": "B"}'], 3),
}


def answer_requests(
    requests: list[InstructRequest], replies: dict[str, list[Any]]
) -> list[InstructRecord]:
    """The records an instructor would return: the j-th reply for the j-th request."""
    records = []
    for request in requests:
        sample_replies = replies[request.source_ids[0]]
        j = request.extra["sample_index"]
        if j >= len(sample_replies):
            continue  # never answered
        reply = sample_replies[j]
        if reply is FAILED:
            records.append(record_for(request, status="failed", model="m", error="HTTP 500"))
        else:
            records.append(record_for(request, status="ok", model="m", reply=reply))
    return records


def test_resolve_keeps_a_strict_majority_and_drops_the_rest() -> None:
    n = 3
    choice_question = GOOD["multiple choice"][2]
    samples = [
        sample(sid, choice_question if task == "mmlu" else MATH_GOOD["question"], stated, task=task)
        for sid, (task, stated, _, _) in VOTES.items()
    ]
    samples.append(sample("original:gsm8k/train/3", PAINT, "6", strategy="original"))
    requests = resolve_requests(samples, TASKS, n, temperature=0.7, max_tokens=64)
    assert len(requests) == n * len(VOTES)  # none for the real row
    records = answer_requests(requests, {sid: replies for sid, (_, _, replies, _) in VOTES.items()})
    out = by_id(check_resolve(samples, TASKS, records, n))
    assert list(out) == [s.id for s in samples]
    for sid, (_, _, _, agree) in VOTES.items():
        got = out[sid]
        assert got.kept is (agree * 2 > n), (sid, got.checks)
        assert got.checks["resolve"].startswith(f"{agree}/{n} ")
        if not got.kept:
            assert (got.drop_reason or "").startswith("failed verification: ")
    assert out["original:gsm8k/train/3"] == samples[-1]  # a real row is not re-solved


@pytest.mark.parametrize("agree, n", [(1, 2), (2, 2), (2, 4), (3, 4), (1, 1), (0, 1)])
def test_resolve_needs_more_than_half(agree: int, n: int) -> None:
    target = sample("le:m#0", MATH_GOOD["question"], "6")
    requests = resolve_requests([target], TASKS, n, temperature=0.7, max_tokens=64)
    replies = ['{"answer": 6}'] * agree + ['{"answer": 7}'] * (n - agree)
    (got,) = check_resolve([target], TASKS, answer_requests(requests, {target.id: replies}), n)
    assert got.kept is (agree > n / 2)


# ---- duplicates ---------------------------------------------------------------------------


def duplicate_samples() -> list[GeneratedSample]:
    return [
        sample("le:a#0", APPLES),
        sample("le:a#1", APPLES_SHOUTED),  # exact copy of le:a#0
        sample("le:b#0", APPLES_REWORDED),  # near copy of le:a#0
        sample("le:b#1", PAINT),
        sample("le:c#0", TRAIN_SPEED, kept=False, drop_reason="format: x"),  # not live
        sample("le:c#1", TRAIN_SPEED),  # the first live one of its kind
        sample("le:d#0", POOL[0][1]),  # copies a pool row word for word
        sample("original:gsm8k/train/9", POOL[2][1], strategy="original"),  # *is* a pool row
        sample("le:d#1", POOL[1][1].replace("Rosa", "Mia")),  # a pool row, name changed
    ]


def test_duplicate_premises_hold_for_the_hashing_embedder() -> None:
    near = {("le:a#0", "le:b#0"), ("le:d#1", "gsm8k/train/8")}
    texts = {s.id: s.question for s in duplicate_samples()} | dict(POOL)
    for a, b in near:
        assert cosine(texts[a], texts[b]) > HASH_THRESHOLD + 0.05
    different = [APPLES, PAINT, TRAIN_SPEED, *(text for _, text in POOL)]
    for i, a in enumerate(different):
        for b in different[i + 1 :]:
            assert cosine(a, b) < HASH_THRESHOLD - 0.2


def test_duplicates_within_the_set_and_against_the_pool() -> None:
    samples = duplicate_samples()
    out = by_id(check_duplicates(samples, POOL, HashingEmbedder(), HASH_THRESHOLD, True))
    assert list(out) == [s.id for s in samples]
    assert out["le:a#1"].drop_reason == "duplicate: exact copy of le:a#0"
    near = out["le:b#0"].drop_reason or ""
    match = re.fullmatch(r"duplicate: near \(cosine (\d\.\d\d)\) copy of le:a#0", near)
    assert match, near
    assert float(match.group(1)) == pytest.approx(cosine(APPLES, APPLES_REWORDED), abs=0.006)
    assert out["le:d#0"].drop_reason == "duplicate: exact copy of training row gsm8k/train/7"
    assert re.fullmatch(
        r"duplicate: near \(cosine \d\.\d\d\) copy of training row gsm8k/train/8",
        out["le:d#1"].drop_reason or "",
    )
    for sid in ("le:a#0", "le:b#1", "le:c#1", "original:gsm8k/train/9"):
        assert out[sid].kept and out[sid].checks["dedup"] == "unique", sid
    assert out["le:c#0"] == samples[4]  # a sample dropped earlier is neither compared nor noted
    for sid in ("le:a#1", "le:b#0", "le:d#0", "le:d#1"):
        named = (out[sid].drop_reason or "").rsplit(" ", 1)[-1]  # the id it copies
        assert not out[sid].kept and out[sid].checks["dedup"].endswith(f"copy of {named}")


def test_pool_copies_stay_when_the_pool_check_is_off() -> None:
    samples = duplicate_samples()
    out = by_id(check_duplicates(samples, POOL, HashingEmbedder(), HASH_THRESHOLD, False))
    dropped = {sid for sid, s in out.items() if not s.kept}
    assert dropped == {"le:a#1", "le:b#0", "le:c#0"}  # within the set only (and le:c#0 before)


# ---- decontamination (real GSM8K test rows) -----------------------------------------------


@pytest.fixture(scope="module")
def gsm8k_test(shared_data_dir: Path) -> list[Sample]:
    """The real GSM8K test rows: the copies below are of two items by name."""
    return get_task("gsm8k").load("test", data_dir=shared_data_dir)


def find_item(rows: list[Sample], opening: str) -> Sample:
    found = [s for s in rows if s.question.startswith(opening)]
    if not found:
        pytest.skip(f"GSM8K test item {opening!r}... not in the data folder")
    return found[0]


def light_copies(rows: list[Sample]) -> dict[str, tuple[Sample, str]]:
    """Two test items, each copied with a name and one number changed."""
    carla = find_item(rows, "Carla is downloading")
    eliza = find_item(rows, "Eliza's rate per hour")
    copies = {
        "carla": (carla, carla.question.replace("Carla", "Maya").replace("200 GB", "300 GB")),
        "eliza": (eliza, eliza.question.replace("Eliza", "Nora").replace("45 hours", "48 hours")),
    }
    for item, copy in copies.values():
        assert copy != item.question
        # the premise: the edits leave a 13-gram of the item intact, and of no other item
        assert [s.id for s in rows if shares_13gram(copy, s.question)] == [item.id]
    for fresh in (PAINT, TRAIN_SPEED, APPLES):
        assert not any(shares_13gram(fresh, s.question) for s in rows)
    return copies


def test_contamination_drops_light_copies_of_test_items(gsm8k_test: list[Sample]) -> None:
    copies = light_copies(gsm8k_test)
    (carla, carla_copy), (eliza, eliza_copy) = copies["carla"], copies["eliza"]
    samples = [
        sample("le:a#0", carla_copy),
        sample("le:a#1", PAINT),
        # dropped as a duplicate: still checked (and counted), but its reason stays
        sample("le:a#2", eliza_copy, kept=False, drop_reason="duplicate: exact copy of le:x#0"),
        # never passed the format check: not checked
        sample("le:a#3", carla_copy + " ", kept=False, drop_reason="format: missing solution"),
    ]
    index = ContaminationIndex({"gsm8k/test": [(s.id, s.question) for s in gsm8k_test]})
    out, findings, checked = check_contamination(samples, index)
    got = by_id(out)
    assert checked == 3 and len(findings) == 3
    assert (got["le:a#0"].drop_reason or "").startswith(
        f"contaminated: gsm8k/test item {carla.id} "
    )
    assert got["le:a#0"].checks["decontaminate"].startswith(f"gsm8k/test item {carla.id} ")
    assert got["le:a#1"].kept and "decontaminate" in got["le:a#1"].checks
    assert got["le:a#2"].drop_reason == "duplicate: exact copy of le:x#0"
    assert f"item {eliza.id} " in got["le:a#2"].checks["decontaminate"]
    assert got["le:a#3"] == samples[3]
    assert sorted(f.item_id for f in findings if f is not None) == sorted([carla.id, eliza.id])


def test_contamination_rate_per_benchmark_in_the_summary(gsm8k_test: list[Sample]) -> None:
    copies = light_copies(gsm8k_test)
    carla_copy, eliza_copy = copies["carla"][1], copies["eliza"][1]
    samples = [
        sample("le:a#0", carla_copy),
        sample("le:a#1", carla_copy.upper()),  # dropped as a duplicate here, still counted
        sample("le:a#2", eliza_copy),
        sample("le:a#3", PAINT),
        sample("le:a#4", TRAIN_SPEED),
        sample("le:a#5", eliza_copy, kept=False, drop_reason="format: missing solution"),
        sample("le:a#6", APPLES, kept=False, drop_reason="duplicate: same question as le:z#0"),
        sample("original:gsm8k/train/9", POOL[2][1], strategy="original"),
    ]
    other = [("other/test/0", "Volcanic lava flows cool into basalt columns along the coast.")]
    benchmarks = {"gsm8k/test": [(s.id, s.question) for s in gsm8k_test], "other/test": other}
    config = VerifyConfig(
        dedup=DedupCheck(threshold=HASH_THRESHOLD),
        execute=False,
        resolve=ResolveCheck(enabled=False),
    )
    out, summary = verify_samples(
        samples,
        TASKS,
        config,
        pool=lambda: list(POOL),
        contamination=lambda: ContaminationIndex(benchmarks),
        embedder=HashingEmbedder,
        resolve=forbidden("resolve"),
    )
    assert summary["checks"] == ["dedup", "decontaminate"]
    # every sample that passed the format check counts, whatever else dropped it
    checked = [s for s in samples if s.kept or (s.drop_reason or "").startswith("duplicate")]
    for key, items in benchmarks.items():
        hits = sum(any(shares_13gram(s.question, text) for _, text in items) for s in checked)
        assert summary["contamination"][key] == {  # type: ignore[index]
            "checked": len(checked),
            "contaminated": hits,
            "rate": pytest.approx(hits / len(checked)),
        }
    assert summary["contamination"]["gsm8k/test"]["contaminated"] == 3  # type: ignore[index]
    got = by_id(out)
    assert (got["le:a#1"].drop_reason or "").startswith("duplicate: exact copy of le:a#0")
    assert {sid for sid, s in got.items() if (s.drop_reason or "").startswith("contaminated")} == {
        "le:a#0",
        "le:a#2",
    }


# ---- the whole stage: every switch --------------------------------------------------------


def forbidden(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} was called although its check is off")

    return call


BENCH_ITEM = (
    "A school bus carries 42 pupils on its morning route and stops at 7 schools, leaving "
    "the same number of pupils at each. How many pupils get off at each school?"
)
#: which sample each check should drop when it runs alone
TARGETS = {
    "dedup": "le:a#1",
    "decontaminate": "le:a#2",
    "execute": "le:c#0",
    "resolve": "le:a#4",
}


def stage_samples() -> list[GeneratedSample]:
    return [
        sample("le:a#0", APPLES, "50"),
        sample("le:a#1", APPLES_SHOUTED, "50"),  # duplicate
        sample("le:a#2", BENCH_ITEM, "6"),  # copies an evaluation item
        code_sample("le:c#0", CODE_WRONG),  # fails its tests
        sample("le:a#4", PAINT, "7"),  # the instructor re-solves it to 6
        sample("le:a#5", TRAIN_SPEED, "4", kept=False, drop_reason="format: missing solution"),
    ]


class Collaborators:
    """The stage's expensive callables; each raises when its check is off, and counts calls."""

    def __init__(self, on: set[str], against_pool: bool = True) -> None:
        self.on = on
        self.against_pool = against_pool
        self.calls: dict[str, int] = {}
        self.requests: list[InstructRequest] = []

    def _call(self, name: str, needed_by: str) -> None:
        if needed_by not in self.on:
            raise AssertionError(f"{name} was called although {needed_by} is off")
        self.calls[name] = self.calls.get(name, 0) + 1

    def pool(self) -> list[tuple[str, str]]:
        self._call("pool", "dedup")
        if not self.against_pool:
            raise AssertionError("pool was loaded although against_pool is off")
        return list(POOL)

    def contamination(self) -> ContaminationIndex:
        self._call("contamination", "decontaminate")
        return ContaminationIndex({"bench/test": [("bench/test/0", BENCH_ITEM)]})

    def embedder(self) -> HashingEmbedder:
        self._call("embedder", "dedup")
        return HashingEmbedder()

    def resolve(self, requests: list[InstructRequest]) -> list[InstructRecord]:
        self._call("resolve", "resolve")
        self.requests.extend(requests)
        stated = {s.id: s.answer for s in stage_samples()}
        solved = {**stated, "le:a#4": "6"}  # 24 boards * 2 coats / 8 coats a can = 6, not 7
        return [
            record_for(
                r, status="ok", model="m", reply=json.dumps({"answer": solved[r.source_ids[0]]})
            )
            for r in requests
        ]

    def kwargs(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "contamination": self.contamination,
            "embedder": self.embedder,
            "resolve": self.resolve,
        }


def config_with(on: set[str], against_pool: bool = True, n: int = 3) -> VerifyConfig:
    return VerifyConfig(
        dedup=DedupCheck(
            enabled="dedup" in on, threshold=HASH_THRESHOLD, against_pool=against_pool
        ),
        decontaminate=DecontaminationCheck(enabled="decontaminate" in on),
        execute="execute" in on,
        resolve=ResolveCheck(enabled="resolve" in on, n=n),
    )


def test_all_checks_off_changes_nothing_and_calls_nothing() -> None:
    samples = stage_samples()
    helpers = Collaborators(set())
    out, summary = verify_samples(samples, TASKS, config_with(set()), **helpers.kwargs())
    assert out == samples and summary["checks"] == [] and helpers.calls == {}


@pytest.mark.parametrize("check", CHECK_KEYS)
def test_each_check_runs_alone_when_the_others_are_off(check: str) -> None:
    samples = stage_samples()
    helpers = Collaborators({check})
    out, summary = verify_samples(samples, TASKS, config_with({check}), **helpers.kwargs())
    assert summary["checks"] == [check]
    assert [s.id for s in out] == [s.id for s in samples]  # nothing lost, order kept
    dropped = {s.id for s in out if not s.kept} - {s.id for s in samples if not s.kept}
    assert dropped == {TARGETS[check]}
    target = by_id(out)[TARGETS[check]]
    assert target.drop_reason and check in target.checks
    for s in out:
        assert not set(s.checks) & (set(CHECK_KEYS) - {check}), (s.id, s.checks)
    assert by_id(out)["le:a#5"] == samples[-1]  # dropped by the parser: untouched
    if check == "resolve":
        kept_math = [s for s in samples if s.kept and s.task == "gsm8k"]
        assert summary["resolve_requests"] == 3 * len(kept_math) == len(helpers.requests)


def test_all_checks_on_drop_every_target_and_resolve_only_what_is_left() -> None:
    samples = stage_samples()
    helpers = Collaborators(set(CHECK_KEYS))
    out, summary = verify_samples(
        samples, TASKS, config_with(set(CHECK_KEYS), n=2), **helpers.kwargs()
    )
    assert summary["checks"] == list(CHECK_KEYS)  # in the documented order
    assert [s.id for s in out] == [s.id for s in samples]
    got = by_id(out)
    for check, sid in TARGETS.items():
        assert not got[sid].kept and check in got[sid].checks, (check, got[sid])
    assert got["le:a#0"].kept
    assert set(got["le:a#0"].checks) == {"dedup", "decontaminate", "resolve"}
    # re-solving is paid only for math samples still kept after the cheap checks
    assert {r.source_ids[0] for r in helpers.requests} == {"le:a#0", "le:a#4"}
    assert summary["resolve_requests"] == 2 * 2
    assert summary["contamination"]["bench/test"]["contaminated"] == 1  # type: ignore[index]
    assert helpers.calls["embedder"] >= 1 and helpers.calls["pool"] == 1


def test_dedup_without_the_pool_never_loads_it() -> None:
    samples = stage_samples()
    helpers = Collaborators({"dedup"}, against_pool=False)
    out, _ = verify_samples(
        samples, TASKS, config_with({"dedup"}, against_pool=False), **helpers.kwargs()
    )
    assert "pool" not in helpers.calls
    assert {s.id for s in out if not s.kept} == {"le:a#1", "le:a#5"}


# ---- diagnoses ----------------------------------------------------------------------------

ADDS = "The student adds the two numbers when the problem asks to multiply them."
ADDS_AGAIN = "the student ADDS the two numbers when the problem asks to multiply them!"
ADDS_SHORTER = "The student adds the numbers when the problem asks to multiply them."
UNITS = "Misreads units: converts hours to minutes using a factor of 100 instead of 60."


def error(eid: str) -> Attempt:
    return Attempt(
        id=eid,
        task="gsm8k",
        question=f"question {eid}",
        reference="1",
        prompt=[],
        response="2",
        extracted="2",
        correct=False,
        reason="final answer 2, expected 1",
    )


def diagnosed(sid: str, eid: str, diagnosis: str, kept: bool = True) -> GeneratedSample:
    return dataclasses.replace(
        sample(sid, f"q {sid}", kept=kept), error_id=eid, diagnosis=diagnosis
    )


def test_diagnosis_premises_hold_for_the_hashing_embedder() -> None:
    for text in (ADDS_AGAIN, ADDS_SHORTER):
        assert cosine(ADDS, text) > 0.9
    assert cosine(ADDS, UNITS) < 0.3


def test_group_by_diagnosis_puts_like_with_like() -> None:
    errors = [error(f"gsm8k/train/{i}") for i in range(1, 7)]
    samples = [
        diagnosed("le:1#0", "gsm8k/train/1", ADDS),
        diagnosed("le:1#1", "gsm8k/train/1", ADDS, kept=False),
        diagnosed("le:2#0", "gsm8k/train/2", ADDS_AGAIN),
        diagnosed("le:3#0", "gsm8k/train/3", UNITS),
        diagnosed("le:4#0", "gsm8k/train/4", ""),  # the reply had no diagnosis
        diagnosed("le:6#0", "gsm8k/train/6", ADDS_SHORTER, kept=False),
        # gsm8k/train/5 got no sample at all
    ]
    fixed = {"gsm8k/train/1", "gsm8k/train/3", "gsm8k/train/5", "gsm8k/train/6"}
    result = group_by_diagnosis(errors, samples, fixed, HashingEmbedder(), threshold=0.7)
    groups = result["groups"]
    members = [sorted(e["id"] for e in g["errors"]) for g in groups]
    assert members == [
        ["gsm8k/train/1", "gsm8k/train/2", "gsm8k/train/6"],
        ["gsm8k/train/3"],
        ["gsm8k/train/4", "gsm8k/train/5"],
    ]
    assert [g["label"] for g in groups] == [ADDS, UNITS, NO_DIAGNOSIS]  # the undiagnosed last
    for group, ids in zip(groups, members, strict=True):
        assert group["n"] == len(ids)
        assert group["fixed"] == len(fixed & set(ids))
        mine = [s for s in samples if s.error_id in ids]
        assert group["kept_samples"] == sum(s.kept for s in mine)
    first = groups[0]["errors"][0]
    assert first["diagnosis"] == ADDS and first["fixed"] is True
    assert [s["id"] for s in first["samples"]] == ["le:1#0", "le:1#1"]


def test_group_by_diagnosis_threshold_splits_and_merges() -> None:
    errors = [error("gsm8k/train/1"), error("gsm8k/train/2")]
    samples = [
        diagnosed("le:1#0", "gsm8k/train/1", ADDS),
        diagnosed("le:2#0", "gsm8k/train/2", UNITS),
    ]
    together = group_by_diagnosis(errors, samples, set(), HashingEmbedder(), threshold=-1.0)
    assert [g["n"] for g in together["groups"]] == [2]  # everything is similar enough
    apart = group_by_diagnosis(errors, samples, set(), HashingEmbedder(), threshold=0.99)
    assert [g["n"] for g in apart["groups"]] == [1, 1] and apart["threshold"] == 0.99
    assert group_by_diagnosis([], [], set(), HashingEmbedder())["groups"] == []
