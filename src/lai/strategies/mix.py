"""Mix: LE and LEC together (Ying et al., 2024, the combination of both strategies).

The paper finds that LE and LEC fix different errors and reports runs that apply both,
one after the other across iterations. Two schedules, set by the ``mix`` option
(:class:`~lai.config.MixConfig`, or a dict with the same keys):

* ``alternate`` (the paper's combination): iteration 1, 3, 5, ... is a pure LE iteration,
  2, 4, ... a pure LEC one; the whole budget goes to that iteration's strategy.
* ``ratio``: every iteration uses both. The errors are split deterministically (sorted by
  id, then shuffled with the run's seed) so ``round(lec_fraction * #errors)`` go to LEC
  (half rounds up) and the rest to LE. The budget is split in the same proportion, so
  each arm still asks ``n = ceil(budget_part / errors_part) + 1`` samples per error.

Requests keep their arm's id and strategy (``le:<id>`` / ``lec:<id>``) and template, so
provenance shows which arm wrote every sample and a resumed run finds its requests again.
Each arm is the real :class:`LearningFromErrors` / :class:`LearningFromContrast`, so the
mix asks exactly what those strategies would ask for its share of the errors.

Reference: Ying, J., et al. (2024). LLMs-as-Instructors: Learning from Errors Toward
Automating Model Improvement. Findings of EMNLP 2024.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lai.config import MixConfig
from lai.instructor.base import InstructRequest
from lai.records import Attempt
from lai.strategies.base import Strategy
from lai.strategies.le import LearningFromErrors
from lai.strategies.lec import LearningFromContrast
from lai.strategies.rows import seeded_rng
from lai.tasks.base import Task


def mix_config(mix: MixConfig | Mapping[str, Any] | None) -> MixConfig:
    """The ``mix`` option as a validated :class:`MixConfig` (defaults when None)."""
    if isinstance(mix, MixConfig):
        return mix
    return MixConfig.model_validate(dict(mix or {}))


def lec_count(errors: int, lec_fraction: float) -> int:
    """``round(lec_fraction * errors)``, half up: 3 errors at 0.5 give LEC 2, 5 give 3.

    Python's ``round`` would round half to even (1.5 -> 2 but 2.5 -> 2), so which arm gets
    the odd error would depend on the error count.
    """
    return min(errors, int(lec_fraction * errors + 0.5))


def split_errors(
    errors: list[Attempt], lec_fraction: float, seed: int
) -> tuple[list[Attempt], list[Attempt]]:
    """``(le errors, lec errors)``: a seeded random split, the same for any input order."""
    shuffled = sorted(errors, key=lambda a: a.id)
    seeded_rng(seed, "mix").shuffle(shuffled)
    cut = lec_count(len(shuffled), lec_fraction)
    return shuffled[cut:], shuffled[:cut]


def split_budget(budget: int, part: int, whole: int) -> int:
    """The share of ``budget`` for ``part`` of ``whole`` errors, rounded half up (integers)."""
    return (2 * budget * part + whole) // (2 * whole) if whole else 0


class MixedLearning(Strategy):
    name = "mix"
    description = "LE and LEC together"
    options = ("k", "embedder", "mix")

    def __init__(
        self,
        budget: int,
        seed: int = 0,
        mix: MixConfig | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(budget, seed, **options)
        self.mix = mix_config(mix)
        # k, embedder, cache_dir, iteration, ...: passed on to the arms, which take theirs.
        self.arm_options = options

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        """``mix (ratio, 50% lec, k=2)`` or ``mix (alternate, k=2)``."""
        mix = settings.get("mix") or {}
        schedule = mix.get("schedule", "ratio")
        parts = [schedule]
        if schedule == "ratio":
            parts.append(f"{100 * float(mix.get('lec_fraction', 0.5)):.0f}% lec")
        if settings.get("k") is not None:
            parts.append(f"k={settings['k']}")
        return f"mix ({', '.join(parts)})"

    @classmethod
    def describe(cls, settings: Mapping[str, Any]) -> str:
        mix = settings.get("mix") or {}
        if mix.get("schedule") == "alternate":
            return f"{cls.description}: LE in odd iterations, LEC in even ones"
        share = 100 * float(mix.get("lec_fraction", 0.5))
        return f"{cls.description}: {share:.0f}% of each iteration's errors go to LEC, the rest to LE"

    def arm(self, cls: type[Strategy], budget: int) -> Strategy:
        return cls(budget, self.seed, **self.arm_options)

    def alternate_arm(self) -> type[Strategy]:
        """The paper's schedule: LE in odd iterations, LEC in even ones."""
        return LearningFromErrors if self.iteration % 2 == 1 else LearningFromContrast

    def plan(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        if self.mix.schedule == "alternate":
            return self.arm(self.alternate_arm(), self.budget).plan(attempts, tasks)
        return self.plan_ratio(attempts, tasks)

    def plan_ratio(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        errors = [a for a in attempts if not a.correct]
        le_errors, lec_errors = split_errors(errors, self.mix.lec_fraction, self.seed)
        lec_budget = split_budget(self.budget, len(lec_errors), len(errors))
        requests: list[InstructRequest] = []
        if le_errors:
            le = self.arm(LearningFromErrors, self.budget - lec_budget)
            requests += le.plan(le_errors, tasks)
        if lec_errors:
            # LEC still retrieves its contrast examples from every correct attempt.
            lec = self.arm(LearningFromContrast, lec_budget)
            requests += lec.plan(lec_errors + [a for a in attempts if a.correct], tasks)
        # In the order of the errors, as LE and LEC return them.
        position = {a.id: i for i, a in enumerate(errors)}
        return sorted(requests, key=lambda r: position[r.source_ids[0]])
