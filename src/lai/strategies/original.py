"""Original: fine-tune on ``budget`` real training rows instead of written samples.

A baseline for every instructor strategy: same budget, same tasks, but the samples are
real rows of the training pools with their reference solutions. If LE or LEC beat it,
the instructor's samples are worth more than the same amount of ordinary data.

The rows are a seeded random draw from the candidates (training rows no iteration
selected and no benchmark evaluates on) that have a reference solution; rows without one
(e.g. the local MBPP train file, which has no reference code) cannot be taught and are
skipped. The budget is spread over the tasks in proportion to their share of the
attempts, so the mix of tasks matches what the instructor strategies see; a task short of
rows passes its remainder to the others (:func:`~lai.strategies.rows.allocate`).

Deterministic: rows are sorted by id and drawn with a generator seeded by the run's seed,
the iteration and the task, so later iterations draw fresh rows.
"""

from __future__ import annotations

from collections import Counter

from lai.records import Attempt, GeneratedSample, Sample
from lai.strategies.base import Strategy
from lai.strategies.rows import allocate, row_sample, seeded_rng, teachable_rows
from lai.tasks.base import Task


class OriginalRows(Strategy):
    name = "original"
    uses_instructor = False
    description = "real training rows with their reference solutions, no instructor"

    def shares(self, attempts: list[Attempt], capacity: dict[str, int]) -> dict[str, int]:
        """Rows per task: the budget in proportion to the task's attempts, within capacity."""
        return allocate(self.budget, Counter(a.task for a in attempts), capacity)

    def direct_samples(
        self, attempts: list[Attempt], tasks: dict[str, Task], candidates: list[Sample]
    ) -> list[GeneratedSample]:
        rows = teachable_rows(candidates, tasks)
        shares = self.shares(attempts, {name: len(found) for name, found in rows.items()})
        samples = []
        for task_name in sorted(shares):
            if not shares[task_name]:
                continue
            rng = seeded_rng(self.seed, self.iteration, self.name, task_name)
            for row in rng.sample(rows[task_name], shares[task_name]):
                samples.append(row_sample(self.name, row, self.iteration))
        return samples
