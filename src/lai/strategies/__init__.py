"""Strategies: which errors the instructor sees and how many samples each asks for.

``le``, ``lec`` and ``mix`` ask an instructor about the errors; the baselines ``random``
(instructor, random samples), ``original`` and ``nearest`` (real rows, no instructor) show
what the errors and the instructor add.

Adding a strategy is one module with a :class:`Strategy` subclass (its ``name``,
``uses_instructor``, ``description``, ``options`` and ``plan`` or ``direct_samples``)
and one ``STRATEGIES.register`` line here (or in any module imported before the config
is validated). Everything else (config validation, the pipeline, the verify stage, the
reports, the dataset card) asks :func:`strategy_class` by name.
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


def strategy_class(name: str) -> type[Strategy]:
    """The strategy registered as ``name``, for what it declares about itself.

    A name no strategy is registered under (a run made by another lai version) gets the
    :class:`Strategy` base, whose defaults describe it by its name alone, as a strategy
    that asks an instructor, so the reports of such a run still render.
    """
    return STRATEGIES.get(name) if name in STRATEGIES else Strategy


def uses_instructor(name: str) -> bool:
    """Whether strategy ``name`` asks an instructor (False: it trains on real pool rows)."""
    return strategy_class(name).uses_instructor
