"""The Task protocol: how to load a benchmark, prompt for it, and score an answer.

A task is mostly data (lm-evaluation-harness style): where its pools live, the prompt,
the stop strings, the answer extraction and the metric, for each *protocol*:

- ``paper``: zero-shot chat prompts, judged the way the LLMs-as-Instructors paper judges;
- ``lm-eval``: the prompts, few-shot examples, stop strings and answer extraction of
  lm-evaluation-harness, so scores can be compared with it.

A prompt is either chat messages (the target applies its chat template) or a plain
string (sent as is, like lm-eval's default). Tasks scored by log-likelihood return
their options from :meth:`Task.choices`. A task with a training pool also knows the
shape of the training samples an instructor should write for it, so the instruct and
parse stages stay task-agnostic.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lai.data import PoolSource, load_pool_rows
from lai.errors import ConfigError, DataError
from lai.records import GeneratedSample, Sample, Score

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
Prompt = Messages | str

PROTOCOLS = ("paper", "lm-eval")


class SampleRejected(ValueError):
    """A generated sample is malformed; the message is the drop reason."""


@dataclass(frozen=True)
class GenerationSpec:
    """How to generate for one protocol of a task."""

    stop: tuple[str, ...] = ()  # cut the response at the first of these
    max_new_tokens: int | None = None  # None: the run's target.max_new_tokens


@dataclass(frozen=True)
class ResolveRule:
    """How the verify stage re-solves a generated sample: the instructor answers its
    question ``n`` more times with ``template`` (rendered with ``question``), replies
    following ``schema``; each answer is read with :meth:`Task.normalize_answer`."""

    template: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Choices:
    """A multiple-choice item scored by log-likelihood: context, options, the gold index."""

    context: Prompt
    continuations: list[str]
    gold: int


class Task(ABC):
    name: ClassVar[str]
    pools: ClassVar[dict[str, PoolSource]]
    #: JSON schema of one generated training sample (for structured instructor output).
    sample_schema: ClassVar[dict[str, Any]] = {}
    #: The instructor prompt template (lai.instructor.prompts) for each kind of strategy
    #: request: "le" (one error), "lec" (an error beside correct neighbours), "random" (a
    #: row, right or wrong). Empty: evaluation only, the instructor writes nothing for it.
    instructor_templates: ClassVar[dict[str, str]] = {}
    #: How verify re-solves this task's generated samples; None: they are not re-solved.
    resolve_rule: ClassVar[ResolveRule | None] = None

    def load(
        self,
        pool: str,
        *,
        path: Path | None = None,
        data_dir: Path | None = None,
        limit: int | None = None,
        seed: int | None = None,
        strict: bool = False,
    ) -> list[Sample]:
        """Load a pool; with ``limit``, a subset (seeded shuffle when ``seed`` is given).

        A row the task cannot read is skipped and counted (:meth:`skipped`), unless
        ``strict``, when it stops the load.
        """
        skipped: list[str] = []
        samples = self.read_pool(pool, path=path, data_dir=data_dir, strict=strict, skipped=skipped)
        self.__dict__.setdefault("_skipped", {})[pool] = skipped
        if seed is not None:
            random.Random(seed).shuffle(samples)
        return samples[:limit] if limit else samples

    def read_pool(
        self, pool: str, *, path: Path | None, data_dir: Path | None, strict: bool, skipped: list[str]
    ) -> list[Sample]:
        """Every sample of ``pool``, in file order; the ids of rows it could not read go
        into ``skipped``. Where the rows come from is the part a task may override (task
        files, BBH's subtasks, lm-eval's documents); :meth:`load` does the rest."""
        rows, origin = load_pool_rows(self.name, pool, self.pools[pool], path=path, data_dir=data_dir)
        return self.read_rows(rows, pool, origin, strict=strict, skipped=skipped)

    def read_rows(
        self, rows: list[dict[str, Any]], pool: str, origin: str, *, strict: bool = False, skipped: list[str]
    ) -> list[Sample]:
        """Rows to samples. A row :meth:`to_sample` rejects is logged with its id, added to
        ``skipped`` and left out, so one odd row does not stop a whole benchmark (lm-eval
        reads ARC's digit-labelled rows, so must we); ``strict`` stops instead."""
        samples: list[Sample] = []
        before = len(skipped)
        for index, row in enumerate(rows):
            try:
                samples.append(self.to_sample(row, index, pool))
            except DataError as error:
                if strict:
                    raise DataError(
                        f"{origin}: {error.message}",
                        hint="fix or remove the row, or turn strict loading off to skip such rows",
                    ) from None
                skipped.append(str(row.get("id", row.get("task_id", index))))
                log.warning("%s: skipped a row (%s)", origin, error.message)
        if len(skipped) > before:
            log.warning("%s: skipped %d of %d rows that %s cannot read", origin, len(skipped) - before, len(rows), self.name)
        return samples

    def skipped(self, pool: str) -> list[str]:
        """Ids of the rows of ``pool`` the last load skipped (empty when none or not loaded)."""
        return list(self.__dict__.get("_skipped", {}).get(pool, []))

    @abstractmethod
    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample: ...

    @abstractmethod
    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        """What the target sees."""

    def generation(self, protocol: str = "paper") -> GenerationSpec:
        return GenerationSpec()

    def scoring_mode(self, protocol: str = "paper") -> str:
        """``generate`` (answer extraction) or ``loglikelihood`` (rank :meth:`choices`)."""
        return "generate"

    @abstractmethod
    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score: ...

    def score_many(self, samples: list[Sample], responses: list[str], protocol: str = "paper") -> list[Score]:
        """Score a batch; code tasks override this to run their tests in parallel."""
        return [self.score(s, r, protocol) for s, r in zip(samples, responses, strict=True)]

    def choices(self, sample: Sample, protocol: str = "paper") -> Choices | None:
        """The options to rank by log-likelihood, for tasks that can be scored that way."""
        return None

    def score_loglikelihoods(
        self, sample: Sample, item: Choices, logliks: list[float], protocol: str = "paper"
    ) -> Score | None:
        """A task's own verdict on the options' log-likelihoods (lm-eval tasks hand them to
        lm-eval's ``process_results``); None (the default): the most likely option is the answer."""
        return None

    def group(self, sample: Sample) -> str | None:
        """A breakdown key (MMLU subject, GSM-Plus perturbation, BBH subtask), if any."""
        return None

    def check_protocol(self, protocol: str) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}", hint=f"choose one of: {', '.join(PROTOCOLS)}")

    # ---- the instructor side (tasks with a training pool) ---------------------------

    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        """Validate one instructor-written sample; return (question, solution, answer).

        Raise :class:`SampleRejected` with a short reason when it is unusable.
        """
        raise ConfigError(f"task {self.name} is for evaluation only; the instructor cannot write samples for it")

    def training_target(self, solution: str, answer: str) -> str:
        """The assistant turn that teaches a generated sample, in the form ``score`` reads."""
        raise ConfigError(f"task {self.name} is for evaluation only")

    def reference_sample(self, sample: Sample) -> tuple[str, str, str] | None:
        """A real pool row as (question, solution, answer) for :meth:`training_target`.

        Used by the baselines that train on real data (``original``, ``nearest``); None
        when the row has no reference solution to teach.
        """
        return None

    def asks_default_judge(self) -> bool:
        """True when scoring it asks the default LLM judge (an ``llm_judge`` metric without
        its own endpoint): a run then serves its local instructor as the judge while it
        scores (:meth:`lai.instructor.session.InstructorSession.judging`)."""
        return False

    def instructor_template(self, kind: str) -> str:
        """The prompt template for a strategy request of ``kind`` ("le", "lec", "random")."""
        try:
            return self.instructor_templates[kind]
        except KeyError:
            raise ConfigError(
                f"task {self.name} has no instructor prompt for {kind!r} requests",
                hint="it is for evaluation only; draw training pools from another task",
            ) from None

    def normalize_answer(self, text: str) -> str | None:
        """An answer in the form this task compares answers in (re-solving votes with it);
        None when ``text`` holds no answer."""
        return text.strip() or None

    def runnable_sample(self, sample: GeneratedSample) -> tuple[Sample, str] | None:
        """Tasks verified by execution: the scoreable sample and the response whose
        :meth:`score_many` verdict decides whether a generated sample's reference solution
        passes its own tests. None (the default): not verified by execution."""
        return None

    def training_sample(self, question: str) -> Sample:
        """Wrap a generated question so :meth:`prompt` can format it like a real one."""
        return Sample(id="generated", task=self.name, question=question, reference="")
