"""The target backend protocol: a batch of chat prompts in, a list of texts out.

One small base class, as in lm-evaluation-harness's ``LM``: backends differ in how they
run a model, never in what the pipeline asks of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

Messages = list[dict[str, str]]
#: Chat messages (the backend applies the chat template) or a raw string (sent as is).
Prompt = Messages | str


class Target(ABC):
    """A model that answers chat prompts greedily."""

    #: Called with a count as rows of a ``generate`` batch finish, if set (progress bars;
    #: :func:`lai.scoring.write_answers` installs it). A backend that never calls it is
    #: still counted, once per batch.
    row_done: Callable[[int], None] | None = None

    def __init__(self, model: str, **settings: Any) -> None:
        self.name = model  # what the config called it (a path, a hub id, a fake's label)

    @abstractmethod
    def generate(self, prompts: list[Prompt], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        """Greedy completions, one per prompt, in order, each cut at the first stop string."""

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context."""
        raise NotImplementedError(f"{type(self).__name__} cannot score by log-likelihood")

    def fingerprint(self) -> str:
        """A short hash that changes when the weights change (for the manifest)."""
        return "unknown"

    def close(self) -> None:
        """Release memory before another stage loads a model."""
