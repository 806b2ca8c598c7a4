"""Records that cross stage boundaries, stored one JSON object per line.

They are frozen dataclasses (not pydantic): they are built by our own code, not by
users, and only need a stable round trip through JSONL. Field names are part of the
run-directory format; add fields with defaults, never rename (old runs stay readable).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass(frozen=True)
class Sample:
    """One benchmark item: what the target is asked and what counts as right."""

    id: str  # stable across runs: "<task>/<pool>/<row index or native id>"
    task: str
    question: str
    reference: str  # the gold final answer (a number, a letter, ...)
    meta: dict[str, Any] = field(default_factory=dict)  # reference solution, options, tests


@dataclass(frozen=True)
class Score:
    correct: bool
    extracted: str | None
    reason: str  # plain words the instructor and the report can show
    #: further verdicts by metric name, e.g. {"strict-match": True, "flexible-extract": True}
    metrics: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Attempt:
    """The target's answer to one sample, scored (collect and evaluate stages)."""

    id: str
    task: str
    question: str
    reference: str
    prompt: list[dict[str, str]] | str
    response: str
    extracted: str | None
    correct: bool
    reason: str
    protocol: str = "paper"
    metrics: dict[str, bool] = field(default_factory=dict)
    group: str | None = None  # subject / perturbation type / subtask, for breakdowns


@dataclass(frozen=True)
class InstructRecord:
    """One instructor request and its outcome (instruct stage)."""

    id: str  # the request id: derived from the error it is about
    source_ids: list[str]
    task: str
    strategy: str
    n_requested: int
    messages: list[dict[str, str]]
    status: str  # "ok" or "failed"
    reply: str = ""
    finish_reason: str | None = None
    error: str | None = None
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    template: str = ""  # the prompt template the request was rendered from
    template_hash: str = ""


@dataclass(frozen=True)
class GeneratedSample:
    """A training sample the instructor wrote, with the verdict on whether to train on it."""

    id: str  # "<request id>#<k>"
    request_id: str
    source_ids: list[str]
    task: str
    question: str
    solution: str
    answer: str
    kept: bool
    drop_reason: str | None = None
    iteration: int = 0
    diagnosis: str = ""  # the instructor's account of what the target got wrong
    raw: str = ""  # the unparsed reply, kept for replies that yielded nothing
    # Provenance: where the sample came from, so any kept sample traces back to its error.
    strategy: str = ""
    error_id: str = ""  # the wrong attempt it addresses ("" for random/original baselines)
    neighbour_ids: list[str] = field(default_factory=list)  # LEC: the correct answers shown
    row_id: str = ""  # original/nearest/random: the real pool row it is (or imitates)
    instructor_model: str = ""
    template: str = ""
    template_hash: str = ""
    #: per-check evidence, e.g. {"resolve": "3/3 agree on 42", "decontaminate": "clean"}
    checks: dict[str, str] = field(default_factory=dict)


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_dict(cls: type[R], data: dict[str, Any]) -> R:
    """Build a record, ignoring keys written by a newer version of lai."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
