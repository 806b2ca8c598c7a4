"""Trainers, registered lazily by name (TRL is only imported when training runs)."""

from lai.registry import Registry
from lai.train.base import Trainer

TRAINERS: Registry[type[Trainer]] = Registry("trainer")
TRAINERS.register("sft", "lai.train.sft:SFTTrainerBackend")
TRAINERS.register("noop", "lai.train.noop:NoopTrainer")
