"""A trainer that trains nothing: for pipeline tests and for "collect and evaluate only" runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lai.train.base import Trainer, TrainExample


class NoopTrainer(Trainer):
    def train(self, model: str, examples: list[TrainExample], out_dir: Path) -> dict[str, Any]:
        return {"model": model, "examples": len(examples), "steps": 0, "trained": False}
