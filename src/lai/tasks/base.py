"""The Task protocol: how to load a benchmark, prompt for it, and score an answer.

A task is mostly data (lm-evaluation-harness style): where its pools live, the prompt,
the answer extraction and the metric. It also knows the shape of the training samples
an instructor should write for it, so the instruct and parse stages stay task-agnostic.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from lai.data import PoolSource, load_pool_rows
from lai.records import Sample, Score

Messages = list[dict[str, str]]


class SampleRejected(ValueError):
    """A generated sample is malformed; the message is the drop reason."""


class Task(ABC):
    name: ClassVar[str]
    pools: ClassVar[dict[str, PoolSource]]
    #: JSON schema of one generated training sample (for structured instructor output).
    sample_schema: ClassVar[dict[str, Any]]
    #: What the instructor is told a sample of this task looks like (prompt template name).
    template_family: ClassVar[str]

    def load(
        self,
        pool: str,
        *,
        path: Path | None = None,
        data_dir: Path | None = None,
        limit: int | None = None,
        seed: int | None = None,
    ) -> list[Sample]:
        """Load a pool; with ``limit``, a subset (seeded shuffle when ``seed`` is given)."""
        rows, _origin = load_pool_rows(self.name, pool, self.pools[pool], path=path, data_dir=data_dir)
        samples = [self.to_sample(row, index, pool) for index, row in enumerate(rows)]
        if seed is not None:
            random.Random(seed).shuffle(samples)
        return samples[:limit] if limit else samples

    @abstractmethod
    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample: ...

    @abstractmethod
    def prompt(self, sample: Sample) -> Messages:
        """The chat messages the target sees."""

    @abstractmethod
    def score(self, sample: Sample, response: str) -> Score: ...

    @abstractmethod
    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        """Validate one instructor-written sample; return (question, solution, answer).

        Raise :class:`SampleRejected` with a short reason when it is unusable.
        """

    @abstractmethod
    def training_target(self, solution: str, answer: str) -> str:
        """The assistant turn that teaches this sample, in the form ``score`` reads."""

    def training_sample(self, question: str) -> Sample:
        """Wrap a generated question so :meth:`prompt` can format it like a real one."""
        return Sample(id="generated", task=self.name, question=question, reference="")
