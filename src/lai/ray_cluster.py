"""Fan collect, evaluate and code verification out over a Ray cluster.

On one machine the target answers batch after batch in the driver process. With
``cluster.backend: ray`` the pending samples are cut into shards and a pool of Ray
actors answers them, each actor loading the target once and keeping it for every shard
it gets (``ray.util.ActorPool``); the driver appends each shard's records to the same
JSONL the local path writes, as each shard finishes. Resume is unchanged: ids already
on disk are never sent again, a killed run loses at most the shards in flight, and the
records are the same as a local run's (greedy decoding, the same code scoring them).

What a cluster needs: every node can read the model (a hub id, or a path on a shared
filesystem; the models trained by earlier iterations live in the run directory) and the
benchmark data (``data_dir`` or the hub), and has lai installed. Ray itself is optional
(``pip install 'lai[distributed]'``) and imported only when this backend is chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lai.config import ClusterConfig
from lai.errors import ConfigError
from lai.progress import Progress
from lai.records import Attempt, Sample
from lai.scoring import Mode, answer_batches, write_answers
from lai.tasks.setup import TaskSetup, task_setup


@dataclass(frozen=True)
class TargetSpec:
    """Everything a worker needs to build the same target the driver would."""

    backend: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        from lai.targets import TARGETS

        return TARGETS.build(self.backend, self.model, **self.settings)


@dataclass(frozen=True)
class AnswerJob:
    """How to answer: the same arguments :func:`lai.scoring.answer_and_score` takes, and
    the driver's task registrations (task files, lm-eval tasks) for the worker to apply."""

    protocol: str
    mode: Mode
    batch_size: int
    max_new_tokens: int
    tasks: TaskSetup = field(default_factory=TaskSetup)


def answer_shard(target: Any, samples: list[Sample], job: AnswerJob) -> list[Attempt]:
    """Answer one shard with an already-built target (runs inside a worker)."""
    from lai.tasks import get_task
    from lai.tasks.setup import apply_task_setup

    apply_task_setup(job.tasks)
    tasks = {s.task: get_task(s.task) for s in samples}
    attempts: list[Attempt] = []
    for batch in answer_batches(target, tasks, samples, job.protocol, job.mode, job.batch_size, job.max_new_tokens):
        attempts.extend(batch)
    return attempts


def _ray(config: ClusterConfig) -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("cluster.backend is ray, but ray is not installed", hint="pip install 'lai[distributed]'") from None
    if not ray.is_initialized():
        # address None starts a local Ray instance (tests, one machine); "auto" or
        # "ray://host:10001" joins a running cluster. It stays up until the process ends.
        ray.init(address=config.address, num_cpus=config.local_cpus, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)  # fmt: skip
    return ray


def _score_shard(setup: TaskSetup, task_name: str, samples: list[Sample], responses: list[str]) -> list[Any]:
    from lai.tasks import get_task
    from lai.tasks.setup import apply_task_setup

    apply_task_setup(setup)
    return get_task(task_name).score_many(samples, responses)


def ray_scorer(config: ClusterConfig) -> Callable[[str, list[Sample], list[str]], list[Any]]:
    """``score_many`` for code verification, shards run by Ray tasks (each node's sandbox)."""
    ray = _ray(config)
    remote = ray.remote(num_cpus=config.cpus_per_worker)(_score_shard)

    def score(task_name: str, samples: list[Sample], responses: list[str]) -> list[Any]:
        size = config.shard_size
        setup = task_setup()
        refs = [
            remote.remote(setup, task_name, samples[i : i + size], responses[i : i + size])
            for i in range(0, len(samples), size)
        ]
        return [score for shard in ray.get(refs) for score in shard]

    return score


class RayActors:
    """A pool of Ray actors, each holding one loaded target."""

    def __init__(self, config: ClusterConfig, spec: TargetSpec) -> None:
        ray = _ray(config)
        from ray.util import ActorPool

        self._ray = ray

        @ray.remote
        class ShardWorker:
            def __init__(self, spec: TargetSpec) -> None:
                self.target = spec.build()

            def answer(self, samples: list[Sample], job: AnswerJob) -> list[Attempt]:
                return answer_shard(self.target, samples, job)

            def fingerprint(self) -> str:
                return str(self.target.fingerprint())

        options = {"num_cpus": config.cpus_per_worker, "num_gpus": config.gpus_per_worker}
        self.actors = [ShardWorker.options(**options).remote(spec) for _ in range(config.workers)]
        self.pool = ActorPool(self.actors)

    def fingerprint(self) -> str:
        return str(self._ray.get(self.actors[0].fingerprint.remote()))

    def map_unordered(self, shards: list[list[Sample]], job: AnswerJob) -> Iterator[list[Attempt]]:
        return self.pool.map_unordered(lambda actor, shard: actor.answer.remote(shard, job), shards)

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)


def shards_of(samples: list[Sample], size: int) -> list[list[Sample]]:
    """Shards of one task each (a shard is answered with one task's prompt and scorer)."""
    by_task: dict[str, list[Sample]] = {}
    for sample in samples:
        by_task.setdefault(sample.task, []).append(sample)
    return [rows[i : i + size] for rows in by_task.values() for i in range(0, len(rows), size)]


def answer_and_score_sharded(
    actors: Callable[[], RayActors],
    samples: list[Sample],
    out: Path,
    job: AnswerJob,
    shard_size: int,
    *,
    progress: Progress | None = None,
    label: str = "answer",
) -> list[Attempt]:
    """:func:`lai.scoring.answer_and_score` with the pending samples answered by a pool.

    The pool is made only when something is pending; the caller keeps it (and the
    targets its actors loaded) across stages.
    """

    def answer(pending: list[Sample]) -> Iterator[list[Attempt]]:
        return actors().map_unordered(shards_of(pending, shard_size), job)

    return write_answers(samples, out, answer, progress=progress, label=label)
