"""Nearest: for each error, the real training rows most like it; no instructor.

A baseline for LE and LEC that targets the errors without an instructor: instead of
writing new samples about an error, take the unused training rows of the same task whose
questions are closest to the wrong one (cosine similarity of sentence embeddings, the
same embedder spec as LEC) and train on them with their reference solutions. If LE beats
it, the instructor adds more than retrieval of similar practice.

Each error gets ``ceil(budget / #errors)`` rows: errors take turns (sorted by id), each
taking its nearest row that no other error has taken yet, until the budget is reached.
A row is used once even when it is near several errors. When some errors have too few
rows (a task with no teachable candidates, a small pool), the turns go on among the
others until the budget is met or the rows run out, so the sample count matches the
other strategies where the pool allows. The ``k`` option of LEC is not used.

Deterministic: candidates are sorted by id and similarity ties go to the lower id.
Samples are ``nearest:<row id>`` with ``source_ids = [error id, row id]`` and the
similarity in ``checks["nearest"]``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lai.embedding import (
    DEFAULT_EMBEDDER,
    Embedder,
    UsesEmbedder,
    nearest,
)
from lai.records import Attempt, GeneratedSample, Sample
from lai.strategies.base import Strategy
from lai.strategies.rows import ReferenceRow, row_sample, teachable_rows
from lai.tasks.base import Task

Ranked = list[tuple[ReferenceRow, float]]


def take_turns(
    errors: list[Attempt], ranked: dict[str, Ranked], limit: int
) -> list[tuple[Attempt, ReferenceRow, float]]:
    """Round-robin over the errors, each taking its best row not yet taken, up to ``limit``."""
    taken: set[str] = set()
    position = dict.fromkeys(ranked, 0)
    picks: list[tuple[Attempt, ReferenceRow, float]] = []
    open_errors = [e for e in errors if ranked.get(e.id)]
    while open_errors and len(picks) < limit:
        still_open = []
        for error in open_errors:
            if len(picks) == limit:
                break
            rows = ranked[error.id]
            while position[error.id] < len(rows) and rows[position[error.id]][0].sample.id in taken:
                position[error.id] += 1
            if position[error.id] == len(rows):
                continue  # nothing left near this error
            row, score = rows[position[error.id]]
            taken.add(row.sample.id)
            picks.append((error, row, score))
            still_open.append(error)
        open_errors = still_open
    return picks


class NearestRows(UsesEmbedder, Strategy):
    name = "nearest"
    uses_instructor = False
    description = "for each error, the real training rows most similar to it, no instructor"
    options = ("embedder",)

    def __init__(
        self,
        budget: int,
        seed: int = 0,
        embedder: str | Embedder = DEFAULT_EMBEDDER,
        cache_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(budget, seed, **options)
        self._use_embedder(embedder, cache_dir)

    def ranked(
        self, errors: list[Attempt], rows: dict[str, list[ReferenceRow]]
    ) -> dict[str, Ranked]:
        """For each error id: rows of its task, nearest first, as many as the budget could use."""
        by_task: dict[str, list[Attempt]] = defaultdict(list)
        for error in errors:
            by_task[error.task].append(error)
        found: dict[str, Ranked] = {}
        for task_name in sorted(by_task):
            group, pool = by_task[task_name], rows.get(task_name, [])
            if not pool:
                continue
            # One embed call per task: the errors and the pool together (cached on disk).
            vectors = self.embedder.embed([e.question for e in group] + [r.question for r in pool])
            indices, scores = nearest(vectors[: len(group)], vectors[len(group) :], self.budget)
            for error, row_indices, row_scores in zip(group, indices, scores, strict=True):
                found[error.id] = [
                    (pool[int(i)], float(s)) for i, s in zip(row_indices, row_scores, strict=True)
                ]
        return found

    def direct_samples(
        self, attempts: list[Attempt], tasks: dict[str, Task], candidates: list[Sample]
    ) -> list[GeneratedSample]:
        errors = sorted((a for a in attempts if not a.correct), key=lambda a: a.id)
        if not errors:
            return []
        picks = take_turns(
            errors, self.ranked(errors, teachable_rows(candidates, tasks)), self.budget
        )
        return [
            row_sample(
                self.name,
                row,
                self.iteration,
                error_id=error.id,
                checks={"nearest": f"cosine {score:.2f}"},
            )
            for error, row, score in picks
        ]
