"""Which rows a run works on: its tasks' pools, the benchmark rows held out of them, each
iteration's seeded slice, and the errors held back as the fix rate's control group.

Every draw here is a pure function of the config (seed, pools, iterations), so a rerun or
a resumed run draws the same rows; nothing in this module writes to the run directory.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lai.config import BenchmarkConfig, PoolConfig, RunConfig
from lai.errors import LaiError
from lai.records import Attempt, Sample
from lai.tasks import get_task
from lai.tasks.base import Task


class Pools:
    """The run's tasks and their loaded rows (each task built and each pool read once)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.tasks: dict[str, Task] = {}
        self._rows: dict[tuple[str, str, Path | None], list[Sample]] = {}

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            self.tasks[name] = get_task(name)
        return self.tasks[name]

    def tasks_of(self, items: Iterable[Any]) -> dict[str, Task]:
        """The tasks of some samples, attempts or records (anything with a ``task`` name)."""
        return {name: self.task(name) for name in sorted({item.task for item in items})}

    def rows(self, task: str, pool: str, path: Path | None) -> list[Sample]:
        key = (task, pool, path)
        if key not in self._rows:
            self._rows[key] = self.task(task).load(
                pool, path=path, data_dir=self.config.data_dir, strict=self.config.strict_loading
            )
        return self._rows[key]

    def benchmarks(self) -> dict[str, tuple[BenchmarkConfig, list[Sample]]]:
        """Benchmarks by key: "task/pool", with "@lm-eval" when not the paper protocol."""
        benches = {}
        for bench in self.config.evaluate.benchmarks:
            rows = self.rows(bench.task, bench.pool, bench.path)
            key = f"{bench.task}/{bench.pool}" + ("" if bench.protocol == "paper" else f"@{bench.protocol}")
            benches[key] = (bench, rows[: bench.limit] if bench.limit else rows)
        return benches

    def shuffled(self) -> list[tuple[PoolConfig, list[Sample]]]:
        """Each training pool in its seeded order, without the rows a benchmark evaluates on
        (so a train slice can serve as a held-out evaluation set)."""
        held_out = {s.id for _, rows in self.benchmarks().values() for s in rows}
        shuffled = []
        for spec in self.config.select.pools:
            candidates = [s for s in self.rows(spec.task, spec.pool, spec.path) if s.id not in held_out]
            seed = int(hashlib.sha256(f"{self.config.seed}/{spec.task}/{spec.pool}".encode()).hexdigest()[:8], 16)
            random.Random(seed).shuffle(candidates)
            shuffled.append((spec, candidates))
        return shuffled

    def draw(self, k: int) -> list[dict[str, str]]:
        """Iteration ``k``'s questions: the k-th slice of each pool's seeded order."""
        chosen: list[dict[str, str]] = []
        for spec, candidates in self.shuffled():
            picked = candidates[(k - 1) * spec.n : k * spec.n]
            if not picked:
                raise LaiError(
                    f"the {spec.task}/{spec.pool} pool has no unused rows left for iteration {k}",
                    hint="lower select.pools[].n or the number of iterations",
                )
            chosen += [{"id": s.id, "task": s.task, "pool": spec.pool} for s in picked]
        return chosen

    def unselected(self) -> list[Sample]:
        """Pool rows that no iteration of this run selects (what the real-data baselines use)."""
        return [s for spec, rows in self.shuffled() for s in rows[self.config.iterations * spec.n :]]

    def texts(self) -> list[tuple[str, str]]:
        """(id, question) of every training-pool row, for the duplicate check."""
        return [(s.id, s.question) for spec in self.config.select.pools for s in self.rows(spec.task, spec.pool, spec.path)]

    def selected(self, drawn: list[dict[str, Any]]) -> list[Sample]:
        """The samples of a drawn selection (the rows of ``selection.jsonl``), in its order."""
        specs = {(p.task, p.pool): p.path for p in self.config.select.pools}
        index = {s.id: s for (task, pool), path in specs.items() for s in self.rows(task, pool, path)}
        return [index[row["id"]] for row in drawn]


def control_ids(attempts: list[Attempt], seed: int, fraction: float) -> set[str]:
    """The errors held back from the strategy: the untargeted control of the fix rate.

    A seeded draw of ``fraction`` of each task's errors, so targeted and control errors
    come from the same tasks in the same proportions.
    """
    by_task: dict[str, list[str]] = {}
    for a in attempts:
        if not a.correct:
            by_task.setdefault(a.task, []).append(a.id)
    held: set[str] = set()
    for task_name, ids in sorted(by_task.items()):
        ids.sort()
        random.Random(f"{seed}/control/{task_name}").shuffle(ids)
        held.update(ids[: round(fraction * len(ids))])
    return held
