"""The strategy protocol: from scored attempts to new training samples.

Two kinds of strategy share it:

* instructor strategies (``le``, ``lec``, ``mix``, ``random``) turn attempts into
  :class:`InstructRequest` s with :meth:`Strategy.plan`; the instructor's replies are
  parsed and checked like any other;
* direct strategies (``original``, ``nearest``; ``uses_instructor = False``) pick real
  training rows themselves with :meth:`Strategy.direct_samples`; no instructor is
  started. They are the baselines that tell whether written samples beat real ones.

The pipeline gives every strategy the same attempts (minus the control errors held back
for the fix rate) and the same budget, so their runs compare at an equal sample count.
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

from lai.instructor.base import InstructRequest
from lai.records import Attempt, GeneratedSample, Sample
from lai.tasks.base import Task


class Strategy(ABC):
    name: ClassVar[str]
    #: Prompt template per task family, e.g. {"math": "le_math"}.
    templates: ClassVar[dict[str, str]] = {}
    #: False for baselines that pick real rows instead of asking an instructor.
    uses_instructor: ClassVar[bool] = True

    def __init__(self, budget: int, seed: int = 0, iteration: int = 1, **options: Any) -> None:
        # Options meant for other strategies (k, embedder, ...) are accepted and ignored,
        # so the pipeline can pass the whole strategy section to any of them.
        self.budget = budget
        self.seed = seed
        self.iteration = iteration

    def template_for(self, task: Task) -> str:
        return self.templates[task.template_family]

    def plan(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        """Instructor strategies: the requests to send.

        Deterministic: the same attempts give the same requests with the same ids.
        """
        raise NotImplementedError(f"strategy {self.name!r} does not use an instructor")

    def direct_samples(
        self, attempts: list[Attempt], tasks: dict[str, Task], candidates: list[Sample]
    ) -> list[GeneratedSample]:
        """Direct strategies: training samples built from real rows of ``candidates``.

        ``candidates`` are the training-pool rows no iteration has selected and no
        benchmark evaluates on. Deterministic, like :meth:`plan`.
        """
        raise NotImplementedError(f"strategy {self.name!r} asks an instructor; use plan()")
