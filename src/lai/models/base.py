"""The target backend protocol: a batch of chat prompts in, a list of texts out.

One small base class, as in lm-evaluation-harness's ``LM``: backends differ in how they
run a model, never in what the pipeline asks of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Messages = list[dict[str, str]]


class Target(ABC):
    """A model that answers chat prompts greedily."""

    def __init__(self, model: str, **settings: Any) -> None:
        self.model = model

    @abstractmethod
    def generate(self, prompts: list[Messages], max_new_tokens: int) -> list[str]:
        """Greedy completions, one per prompt, in order."""

    def fingerprint(self) -> str:
        """A short hash that changes when the weights change (for the manifest)."""
        return "unknown"

    def close(self) -> None:
        """Release memory before another stage loads a model."""
