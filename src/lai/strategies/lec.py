"""LEC, learning from errors by contrast (Ying et al., 2024, section 3.2).

LE shows the instructor one error at a time. LEC adds, for each error, the ``k`` questions
of the same task that the target answered correctly and that are most similar to it
(cosine similarity of sentence embeddings of the question text; the paper's runs use
k = 2). Seeing what the student got right on a near-identical problem helps the instructor
pin down the one step it got wrong, instead of guessing from the error alone.

Input: the target's scored attempts (wrong and right) and their tasks.
Output: one instructor request per wrong attempt, each asking for
``n = ceil(budget / #wrong) + 1`` new samples (as in LE), with id ``lec:<attempt id>`` and
``source_ids = [error id, *neighbour ids]`` so provenance keeps the neighbours.

Deterministic: the correct pool of each task is sorted by id and ties in similarity go
to the lower id, so the same attempts give the same requests in any input order.

Reference: Ying, J., et al. (2024). LLMs-as-Instructors: Learning from Errors Toward
Automating Model Improvement. Findings of EMNLP 2024.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lai.embedding import (
    DEFAULT_EMBEDDER,
    Embedder,
    UsesEmbedder,
    nearest,
)
from lai.instructor.base import InstructRequest
from lai.records import Attempt
from lai.strategies.base import Strategy
from lai.strategies.le import LearningFromErrors, error_request, error_values, samples_per_error
from lai.tasks.base import Task


def render_neighbours(neighbours: list[Attempt]) -> str:
    """The correct examples as numbered blocks for the ``$neighbours`` placeholder."""
    return "\n\n".join(
        f"### Example it solved correctly ({i})\nProblem: {a.question}\nIts answer: {a.response}"
        for i, a in enumerate(neighbours, start=1)
    )


class LearningFromContrast(UsesEmbedder, Strategy):
    name = "lec"
    description = (
        "learning from errors by contrast: each wrong answer is shown with the most similar "
        "questions the target got right"
    )
    options = ("k", "embedder")
    request_kind = "lec"

    def __init__(
        self,
        budget: int,
        seed: int = 0,
        k: int = 2,
        embedder: str | Embedder = DEFAULT_EMBEDDER,
        cache_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        super().__init__(budget, seed, **options)
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self._use_embedder(embedder, cache_dir)

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        k = settings.get("k")
        return f"lec (k={k})" if k is not None else "lec"

    def neighbours(self, attempts: list[Attempt]) -> dict[str, list[tuple[Attempt, float]]]:
        """For each wrong attempt id: its ``k`` nearest correct attempts of the same task."""
        by_task: dict[str, list[Attempt]] = defaultdict(list)
        for attempt in attempts:
            by_task[attempt.task].append(attempt)
        found: dict[str, list[tuple[Attempt, float]]] = {}
        for task_name in sorted(by_task):
            group = by_task[task_name]
            errors = sorted((a for a in group if not a.correct), key=lambda a: a.id)
            correct = sorted((a for a in group if a.correct), key=lambda a: a.id)
            if not errors:
                continue
            if not correct:
                for attempt in errors:
                    found[attempt.id] = []
                continue
            # One embed call per task: errors and the correct pool together.
            vectors = self.embedder.embed([a.question for a in errors + correct])
            indices, scores = nearest(vectors[: len(errors)], vectors[len(errors) :], self.k)
            for attempt, row, row_scores in zip(errors, indices, scores, strict=True):
                found[attempt.id] = [
                    (correct[int(i)], float(s)) for i, s in zip(row, row_scores, strict=True)
                ]
        return found

    def plan(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        errors = [a for a in attempts if not a.correct]
        n = samples_per_error(self.budget, len(errors))
        neighbours = self.neighbours(attempts)
        requests = []
        for attempt in errors:
            task = tasks[attempt.task]
            examples = [a for a, _ in neighbours.get(attempt.id, [])]
            values = error_values(attempt, n)
            if examples:
                template = self.template_for(task)
                values["neighbours"] = render_neighbours(examples)
            else:
                # The target got nothing in this task right, so there is nothing to contrast
                # with: fall back to LE's prompt for this error rather than drop it.
                template = task.instructor_template(LearningFromErrors.request_kind)
            sources = [attempt.id, *(a.id for a in examples)]
            requests.append(error_request(self.name, attempt, task, template, values, sources))
        return requests
