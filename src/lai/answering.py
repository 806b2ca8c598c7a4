"""The target model as the loop uses it: loaded once, kept across stages until the model
changes (the trained model of an iteration replaces it), here or in Ray actors, and asked
to answer and score a list of samples into a resumable JSONL file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lai.config import BenchmarkConfig, RunConfig
from lai.manifest import Manifest
from lai.progress import Progress
from lai.ray_cluster import AnswerJob, RayActors, TargetSpec, answer_and_score_sharded
from lai.records import Attempt, Sample
from lai.scoring import answer_and_score
from lai.targets import Target
from lai.tasks.base import Task
from lai.tasks.setup import task_setup


class LoadedTarget:
    """At most one loaded copy of the target (a local model or a Ray pool) at a time."""

    def __init__(self, config: RunConfig, manifest: Manifest, task: Callable[[str], Task], progress: Progress) -> None:
        self.config = config
        self.manifest = manifest
        self.task = task
        self.progress = progress
        self._target: Target | None = None
        self._target_model: str | None = None
        self._actors: RayActors | None = None
        self._actors_model: str | None = None

    def spec(self, model: str) -> TargetSpec:
        """How to build the target for ``model``: here (:meth:`local`) or in Ray actors (:meth:`ray_actors`)."""
        cfg = self.config.target
        settings = {"dtype": cfg.dtype, "device": cfg.device, "batch_size": cfg.batch_size, **cfg.options}
        return TargetSpec(cfg.backend, model, settings)

    def local(self, model: str, iteration: int) -> Target:
        """Load a target once and reuse it across stages until the model changes."""
        if self._target is None or self._target_model != model:
            self.release()
            self._target = self.spec(model).build()
            self._target_model = model
            self.manifest.record_model(iteration, model, self._target.fingerprint())
        return self._target

    def ray_actors(self, model: str, iteration: int) -> RayActors:
        """Ray actors holding ``model``, made once and reused until the model changes."""
        if self._actors is None or self._actors_model != model:
            self.release()
            self._actors = RayActors(self.config.cluster, self.spec(model))
            self._actors_model = model
            self.manifest.record_model(iteration, model, self._actors.fingerprint())
        return self._actors

    def release(self) -> None:
        """Free the loaded copy (before training loads its own, and at the end)."""
        if self._target is not None:
            self._target.close()
        self._target, self._target_model = None, None
        if self._actors is not None:
            self._actors.close()
        self._actors, self._actors_model = None, None

    def answer(
        self, model: str, k: int, samples: list[Sample], out: Path, label: str, bench: BenchmarkConfig | None = None
    ) -> list[Attempt]:
        """``model`` answers ``samples``; each answer is scored and appended to ``out``
        (a rerun answers only the samples without a line there)."""
        label = f"iteration {k}: {label}"  # both evaluations of a benchmark, told apart
        cfg = self.config.target
        protocol = bench.protocol if bench else "paper"
        tasks = {s.task: self.task(s.task) for s in samples}
        # "auto": each task as it scores (pools of a generation and a log-likelihood task collect together)
        mode = bench.scoring if bench else "auto"
        job = AnswerJob(protocol, mode, cfg.batch_size, cfg.max_new_tokens, task_setup())  # type: ignore[arg-type]
        if self.config.cluster.backend == "ray":
            return answer_and_score_sharded(
                lambda: self.ray_actors(model, k), samples, out, job, self.config.cluster.shard_size,
                progress=self.progress, label=label,
            )  # fmt: skip
        return answer_and_score(
            self.local(model, k), tasks, samples, out, batch_size=job.batch_size,
            max_new_tokens=job.max_new_tokens, protocol=protocol, mode=job.mode, progress=self.progress, label=label,
        )  # fmt: skip
