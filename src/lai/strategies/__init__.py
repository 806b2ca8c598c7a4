"""Strategies: which errors the instructor sees and how many samples each asks for.

``le``, ``lec`` and ``mix`` ask an instructor about the errors; the baselines ``random``
(instructor, random samples), ``original`` and ``nearest`` (real rows, no instructor) show
what the errors and the instructor add.
"""

from lai.registry import Registry
from lai.strategies.base import Strategy

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
STRATEGIES.register("le", "lai.strategies.le:LearningFromErrors")
STRATEGIES.register("lec", "lai.strategies.lec:LearningFromContrast")
STRATEGIES.register("mix", "lai.strategies.mix:MixedLearning")
STRATEGIES.register("random", "lai.strategies.random_samples:RandomSamples")
STRATEGIES.register("original", "lai.strategies.original:OriginalRows")
STRATEGIES.register("nearest", "lai.strategies.nearest:NearestRows")
