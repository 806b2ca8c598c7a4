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

A strategy also declares what the rest of lai needs to know about it, as class
attributes read by name through :func:`lai.strategies.strategy_class` (the reports and
the export only have the name from a run's config): :attr:`Strategy.uses_instructor`,
:attr:`Strategy.description` and :meth:`Strategy.label` for the reports and the dataset
card, and :attr:`Strategy.options`, the ``strategy`` settings the pipeline passes it.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from lai.instructor.base import InstructRequest
from lai.records import Attempt, GeneratedSample, Sample
from lai.tasks.base import Task


class Strategy(ABC):
    name: ClassVar[str]
    #: The kind of instructor request it makes; each task names its prompt template for
    #: each kind (:meth:`Task.instructor_template`), so a new task needs no strategy edit.
    request_kind: ClassVar[str] = ""
    #: False for baselines that train on real pool rows (:meth:`direct_samples`) instead
    #: of asking an instructor: no instructor is started, and the verify stage does not
    #: re-solve or execute their samples (a real row's reference is trusted).
    uses_instructor: ClassVar[bool] = True
    #: What the strategy does, in words for the report and the dataset card (completes
    #: "strategy `name`: ..."); the name alone when empty.
    description: ClassVar[str] = ""
    #: The settings of the config's ``strategy`` section it reads besides ``budget``
    #: (fields of :class:`lai.config.StrategyConfig`); ``Pipeline.strategy`` passes
    #: exactly these to ``__init__`` as keyword arguments.
    options: ClassVar[tuple[str, ...]] = ()
    #: Settings of its own, which no other strategy reads: a pydantic model whose fields
    #: the config's ``strategy`` section may set (checked there like any key, saved with
    #: the run, passed to ``__init__`` as keyword arguments), so a new strategy with a new
    #: knob needs no edit to lai.config. None: it reads only the shared ``options``.
    settings: ClassVar[type[BaseModel] | None] = None

    def __init__(self, budget: int, seed: int = 0, iteration: int = 1, **options: Any) -> None:
        # Other keyword arguments (cache_dir, an option another strategy declares) are
        # accepted and ignored, so a caller may pass the same set to any strategy.
        self.budget = budget
        self.seed = seed
        self.iteration = iteration

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        """The strategy with the settings that tell two runs of it apart: ``lec (k=2)``.

        ``settings`` is a run's ``strategy`` section as saved (a dict), so a report can
        label a run made by another lai version.
        """
        return _name(cls, settings)

    @classmethod
    def describe(cls, settings: Mapping[str, Any]) -> str:
        """:attr:`description`, with the settings that change what it does."""
        return cls.description or _name(cls, settings)

    def template_for(self, task: Task) -> str:
        return task.instructor_template(self.request_kind)

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


def _name(cls: type[Strategy], settings: Mapping[str, Any]) -> str:
    return str(settings.get("name") or getattr(cls, "name", "?"))
