"""Decontamination: generated training samples must not repeat evaluation items.

An instructor that has memorised GSM8K can hand back a test question with a name
changed; training on it would inflate the very score the pipeline reports. Two checks,
cheapest first:

1. **Word n-gram overlap**, as lm-evaluation-harness does it
   (``lm_eval/decontamination/janitor.py``, used by its ``decontaminate.py``): a text is
   contaminated when it shares any 13-word sequence with an evaluation item. We follow its
   normalisation: lowercase, delete punctuation characters outright (not replace them
   with spaces, so ``"$2."`` becomes ``"2"`` and ``"farmers'"`` becomes ``"farmers"``),
   then split on whitespace. Two deliberate differences: lowercasing covers all letters,
   not only ASCII, and every non-alphanumeric, non-space character is deleted, not only
   ``string.punctuation`` — GSM8K writes ``Janet’s`` with a curly apostrophe, and a copy
   typed with a straight one must still match. Light edits (a name, one number, some
   punctuation, case) leave most 13-grams of a 40-word question intact, so they are caught.
2. **Embedding near copies**: a paraphrase shares no 13-gram but sits close to the item
   in sentence-embedding space; cosine at or above ``threshold`` flags it. The threshold
   depends on the embedder; for all-MiniLM-L6-v2 on GSM8K, 0.9 separates paraphrases of
   a test item from unrelated training questions (see ``tests/unit/test_dedup_decontam.py``).

Items shorter than ``n`` words would have no n-grams at all and could never be caught by
the first check; :func:`word_ngrams` therefore lets such a text count as one n-gram made
of all its words, so an exact copy of a short item (after normalisation) is caught. A
short item embedded inside a longer generated text is left to the embedding check.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lai.embedding import Embedder, nearest

#: The n-gram length lm-evaluation-harness (and GPT-3's contamination study) uses.
DEFAULT_N = 13
#: Rows of the similarity matrix computed at once, to bound memory for large inputs.
BLOCK_ROWS = 1024

# Everything that is neither a letter/digit nor whitespace; "_" counts as \w, so add it.
_DELETED = re.compile(r"[^\w\s]|_")


def ngram_words(text: str) -> list[str]:
    """The words n-grams are made of: lowercased, punctuation deleted, split on whitespace."""
    return _DELETED.sub("", text.lower()).split()


def word_ngrams(text: str, n: int = DEFAULT_N) -> set[tuple[str, ...]]:
    """All runs of ``n`` consecutive words of ``text`` (after :func:`ngram_words`).

    A text with fewer than ``n`` words (but at least one) gives one n-gram holding all its
    words, so very short items can still be caught when copied whole; an empty text
    gives none.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    words = ngram_words(text)
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[start : start + n]) for start in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Contamination:
    """Why one generated text was flagged: which item of which benchmark, and how."""

    benchmark: str
    item_id: str
    kind: Literal["ngram", "embedding"]
    detail: str  # "shares 4 13-grams", "repeats the whole 6-word item", "cosine 0.93"


class ContaminationIndex:
    """Evaluation items indexed for fast contamination checks of many generated texts.

    ``benchmarks`` maps a key such as ``"gsm8k/test"`` to ``(item id, text)`` pairs. The
    n-gram index is built once here; item embeddings are computed on the first
    :meth:`check` that needs them (one embed call per benchmark) and kept, so checking
    every iteration's samples costs only the samples' own embeddings.
    """

    def __init__(
        self,
        benchmarks: dict[str, list[tuple[str, str]]],
        n: int = DEFAULT_N,
        embedder: Embedder | None = None,
        threshold: float = 0.9,
    ) -> None:
        self.n = n
        self.embedder = embedder
        self.threshold = threshold
        self.benchmarks = dict(benchmarks)
        #: (benchmark, item id) for every indexed item, in input order
        self._items: list[tuple[str, str]] = [
            (key, item_id) for key, items in self.benchmarks.items() for item_id, _ in items
        ]
        self._by_ngram = self._build_ngram_index()
        self._vectors: dict[str, np.ndarray] = {}

    def _build_ngram_index(self) -> dict[tuple[str, ...], list[int]]:
        """Inverted index: n-gram -> positions in ``self._items`` of the items holding it."""
        index: dict[tuple[str, ...], list[int]] = {}
        texts = (text for items in self.benchmarks.values() for _, text in items)
        for position, text in enumerate(texts):
            for gram in word_ngrams(text, self.n):
                index.setdefault(gram, []).append(position)
        return index

    # ---- n-gram check ---------------------------------------------------------------

    def _ngram_match(self, text: str) -> Contamination | None:
        """The item sharing the most n-grams with ``text`` (earliest item on ties), if any."""
        shared: Counter[int] = Counter()
        short_match = False
        for gram in word_ngrams(text, self.n):
            holders = self._by_ngram.get(gram)
            if holders:
                shared.update(set(holders))
                short_match = short_match or len(gram) < self.n
        if not shared:
            return None
        position, count = min(shared.items(), key=lambda item: (-item[1], item[0]))
        benchmark, item_id = self._items[position]
        if short_match:
            # Only a text shorter than n words yields a short gram, and it is its only one.
            detail = f"repeats the whole {len(ngram_words(text))}-word item"
        else:
            detail = f"shares {count} {self.n}-gram{'s' if count != 1 else ''}"
        return Contamination(benchmark, item_id, "ngram", detail)

    # ---- embedding check ------------------------------------------------------------

    def _benchmark_vectors(self, benchmark: str) -> np.ndarray:
        """Item embeddings of one benchmark, computed once per index."""
        if benchmark not in self._vectors:
            assert self.embedder is not None
            texts = [text for _, text in self.benchmarks[benchmark]]
            self._vectors[benchmark] = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        return self._vectors[benchmark]

    def _best_in_benchmark(
        self, queries: np.ndarray, benchmark: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best item index and cosine in one benchmark for each query (blocks of queries)."""
        indices = np.zeros(queries.shape[0], dtype=np.int64)
        scores = np.full(queries.shape[0], -np.inf, dtype=np.float32)
        if not self.benchmarks[benchmark]:
            return indices, scores
        items = self._benchmark_vectors(benchmark)
        for start in range(0, queries.shape[0], BLOCK_ROWS):
            block_indices, block_scores = nearest(queries[start : start + BLOCK_ROWS], items, k=1)
            indices[start : start + BLOCK_ROWS] = block_indices[:, 0]
            scores[start : start + BLOCK_ROWS] = block_scores[:, 0]
        return indices, scores

    def _embedding_matches(self, texts: list[str]) -> list[Contamination | None]:
        """For each text, the most similar item over all benchmarks if at/above threshold."""
        if self.embedder is None or not texts:
            return [None] * len(texts)
        queries = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        best: list[Contamination | None] = [None] * len(texts)
        best_scores = np.full(len(texts), -np.inf, dtype=np.float32)
        for benchmark, items in self.benchmarks.items():
            indices, scores = self._best_in_benchmark(queries, benchmark)
            # Strictly better only: on a tie the earlier benchmark keeps the match.
            for row in np.flatnonzero((scores >= self.threshold) & (scores > best_scores)):
                best_scores[row] = scores[row]
                item_id = items[int(indices[row])][0]
                best[row] = Contamination(
                    benchmark, item_id, "embedding", f"cosine {scores[row]:.2f}"
                )
        return best

    # ---- public ---------------------------------------------------------------------

    def check(self, texts: list[str]) -> list[Contamination | None]:
        """For each text, ``None`` if clean, else its single strongest match.

        The n-gram check runs first (cheap, and a shared 13-gram is strong evidence); only
        texts it clears are embedded, in one call.
        """
        results = [self._ngram_match(text) for text in texts]
        open_rows = [row for row, found in enumerate(results) if found is None]
        for row, found in zip(
            open_rows, self._embedding_matches([texts[r] for r in open_rows]), strict=True
        ):
            results[row] = found
        return results


def contamination_rates(
    results: list[Contamination | None], benchmarks: list[str], checked: int
) -> dict[str, dict[str, float | int]]:
    """Per benchmark: how many texts were checked, how many were flagged, and the rate.

    Every benchmark in ``benchmarks`` appears, at 0 when nothing matched it, so a report
    shows "0 of 500" rather than omitting the row; a benchmark that appears in ``results``
    but not in ``benchmarks`` is added rather than dropped. Each text counts once, for
    the benchmark of its strongest match.
    """
    if checked < 0:
        raise ValueError(f"checked must be non-negative, got {checked}")
    counts = Counter(found.benchmark for found in results if found is not None)
    keys = list(dict.fromkeys([*benchmarks, *counts]))
    return {
        key: {
            "checked": checked,
            "contaminated": counts[key],
            "rate": counts[key] / checked if checked else 0.0,
        }
        for key in keys
    }
