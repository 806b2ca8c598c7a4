"""The strategy protocol: from scored attempts to instructor requests."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lai.instructor.base import InstructRequest
from lai.records import Attempt
from lai.tasks.base import Task


class Strategy(ABC):
    name: str
    #: Prompt template per task family, e.g. {"math": "le_math"}.
    templates: dict[str, str]

    def __init__(self, budget: int, seed: int = 0, **options: Any) -> None:
        # Options meant for other strategies (k, embedder, ...) are accepted and ignored,
        # so the pipeline can pass the whole strategy section to any of them.
        self.budget = budget
        self.seed = seed

    def template_for(self, task: Task) -> str:
        return self.templates[task.template_family]

    @abstractmethod
    def plan(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        """Deterministic: the same attempts give the same requests with the same ids."""
