"""Duplicates among generated samples, and between generated samples and a training pool.

An instructor asked for many samples repeats itself: the same question word for word, or
the same problem with a name or a number swapped. Training on such repeats overweights a
few problems, so the pipeline keeps the first of each kind and drops the rest, with a
reason a person can check.

Two levels of "the same":

* **exact** — equal after :func:`lai.quality.parse.normalize_text` (case, punctuation
  and spacing ignored), which is free and never wrong;
* **near** — cosine similarity of sentence embeddings at or above a threshold, which
  catches rewordings but needs an :class:`~lai.embedding.Embedder` and a
  threshold chosen for that embedder (a hashing embedder and MiniLM disagree on scale).

Similarities are exact dot products of unit vectors computed in row blocks, so memory
stays at ``block x n`` floats instead of ``n x n`` for thousands of samples.
"""

from __future__ import annotations

import numpy as np

from lai.embedding import Embedder, nearest
from lai.quality.parse import normalize_text

#: Rows of the similarity matrix computed at once: 1024 x 10,000 float32 is 40 MB.
BLOCK_ROWS = 1024


def near_reason(score: float) -> str:
    """The reason string for an embedding match, e.g. ``"near (cosine 0.97)"``."""
    return f"near (cosine {score:.2f})"


def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embed ``texts``; an empty list gives a (0, 0) array rather than a model call."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.asarray(embedder.embed(texts), dtype=np.float32)


def _exact_duplicates(texts: list[str]) -> list[int | None]:
    """For each text, the index of the first earlier text equal after normalisation."""
    first: dict[str, int] = {}
    earlier: list[int | None] = []
    for index, text in enumerate(texts):
        key = normalize_text(text)
        earlier.append(first.get(key))
        first.setdefault(key, index)
    return earlier


def _greedy_near(vectors: np.ndarray, threshold: float) -> list[tuple[int, float] | None]:
    """Walk rows in order; a row close enough to an earlier *kept* row is a duplicate of it.

    Comparing only with kept rows means a chain A ~ B ~ C, where C is far from A, keeps
    C: dropping B must not also drop everything that merely resembles B. Ties go to the
    earliest kept row, so the answer does not depend on floating-point noise in order.
    """
    count = vectors.shape[0]
    kept = np.zeros(count, dtype=bool)
    found: list[tuple[int, float] | None] = [None] * count
    for start in range(0, count, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, count)
        # Row i of the block against every row before it; later rows are masked below.
        scores = vectors[start:stop] @ vectors[:stop].T
        for row in range(start, stop):
            candidates = np.flatnonzero(kept[:row])
            if candidates.size:
                row_scores = scores[row - start, candidates]
                best = int(np.argmax(row_scores))  # first maximum: the earliest kept row
                if row_scores[best] >= threshold:
                    found[row] = (int(candidates[best]), float(row_scores[best]))
                    continue
            kept[row] = True
    return found


def find_duplicates(
    texts: list[str], embedder: Embedder | None, threshold: float
) -> list[tuple[int, str] | None]:
    """For each text in order: ``None`` if it is the first of its kind, else what it repeats.

    The answer is ``(index of the earlier text, reason)`` with reason ``"exact"`` (same
    after :func:`normalize_text`; points at the first text with that normal form) or
    ``"near (cosine 0.97)"`` (embedding similarity with an earlier text that was itself
    kept, at or above ``threshold``). With ``embedder=None`` only exact matching is done.
    Order matters on purpose: the earliest sample survives, so results are stable when
    the caller sorts samples by id.
    """
    exact = _exact_duplicates(texts)
    results: list[tuple[int, str] | None] = [
        None if earlier is None else (earlier, "exact") for earlier in exact
    ]
    if embedder is None:
        return results
    # Only texts that survived the exact pass compete in the near pass; embedding the
    # others would cost time and could only point at the same problem again.
    survivors = [index for index, earlier in enumerate(exact) if earlier is None]
    vectors = _embed(embedder, [texts[index] for index in survivors])
    for position, match in enumerate(_greedy_near(vectors, threshold)):
        if match is not None:
            earlier, score = match
            results[survivors[position]] = (survivors[earlier], near_reason(score))
    return results


def _exact_pool_matches(texts: list[str], pool: list[tuple[str, str]]) -> list[str | None]:
    """For each text, the id of the first pool row with the same normal form, if any."""
    by_key: dict[str, str] = {}
    for row_id, text in pool:
        by_key.setdefault(normalize_text(text), row_id)
    return [by_key.get(normalize_text(text)) for text in texts]


def _best_pool_rows(queries: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best pool row and its cosine for each query, computed in blocks of queries."""
    indices = np.zeros(queries.shape[0], dtype=np.int64)
    scores = np.full(queries.shape[0], -np.inf, dtype=np.float32)
    for start in range(0, queries.shape[0], BLOCK_ROWS):
        block_indices, block_scores = nearest(queries[start : start + BLOCK_ROWS], pool, k=1)
        if block_indices.shape[1]:
            indices[start : start + BLOCK_ROWS] = block_indices[:, 0]
            scores[start : start + BLOCK_ROWS] = block_scores[:, 0]
    return indices, scores


def match_pool(
    texts: list[str],
    pool: list[tuple[str, str]],
    embedder: Embedder | None,
    threshold: float,
) -> list[tuple[str, str] | None]:
    """For each text, ``None`` or ``(pool row id, reason)`` for a pool row it duplicates.

    ``pool`` is ``(row id, text)`` pairs, e.g. a task's training questions: a generated
    sample that repeats one adds nothing the target has not seen. An exact match wins;
    otherwise the most similar pool row counts when its cosine is at least ``threshold``
    (ties go to the earlier pool row). The pool is embedded in one call and only when some
    text is left after exact matching, so cached pools of thousands of rows cost one
    cache read.
    """
    exact = _exact_pool_matches(texts, pool)
    results: list[tuple[str, str] | None] = [
        None if row_id is None else (row_id, "exact") for row_id in exact
    ]
    open_rows = [index for index, row_id in enumerate(exact) if row_id is None]
    if embedder is None or not open_rows or not pool:
        return results
    pool_vectors = _embed(embedder, [text for _, text in pool])
    query_vectors = _embed(embedder, [texts[index] for index in open_rows])
    indices, scores = _best_pool_rows(query_vectors, pool_vectors)
    for position, index in enumerate(open_rows):
        if scores[position] >= threshold:
            results[index] = (pool[int(indices[position])][0], near_reason(float(scores[position])))
    return results
