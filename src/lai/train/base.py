"""The trainer protocol: a model and training examples in, a new model reference out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lai.errors import LaiError
from lai.progress import NullProgress, Progress

if TYPE_CHECKING:  # the registries sit below the config, which checks names against them
    from lai.config import TrainConfig
    from lai.records import GeneratedSample
    from lai.tasks.base import Task

#: What a training run leaves in its folder for the train stage (one process or launched workers).
SUMMARY_FILE = "train_summary.json"


class TrainError(LaiError):
    """Training failed in a way the user can act on (e.g. a launched worker exited non-zero)."""


@dataclass(frozen=True)
class TrainExample:
    """One supervised example: chat prompt messages and the assistant reply to learn."""

    prompt: list[dict[str, str]]
    completion: str


def training_example(task: Task, sample: GeneratedSample) -> TrainExample:
    """What the target trains on for a kept sample: the task's prompt for the sample's
    question, then the solution ending in the task's answer line (the loss is on that turn).

    The one rule: the train stage builds its examples with it, and the export's
    ``messages`` column is the same chat.
    """
    prompt = task.prompt(task.training_sample(sample.question))
    return TrainExample(prompt, task.training_target(sample.solution, sample.answer))  # type: ignore[arg-type]


class Trainer(ABC):
    def __init__(self, config: TrainConfig, seed: int = 0, progress: Progress | None = None, label: str = "train") -> None:
        self.config = config
        self.seed = seed
        # A bar of optimizer steps with the latest loss, for trainers that can report them.
        self.progress: Progress = progress or NullProgress()
        self.label = label

    @abstractmethod
    def train(self, model: str, examples: list[TrainExample], out_dir: Path) -> dict[str, Any]:
        """Train and save; return a summary whose ``model`` is what the next stage loads."""
