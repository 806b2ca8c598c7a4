"""The instructor protocol: one request (chat messages) in, one record out.

An instructor never raises for a request that merely failed (a 400, a garbage reply):
it returns a record with ``status="failed"`` and the reason, so the stage goes on and
the report can count it. It raises :class:`~lai.errors.InstructorError` only when the
endpoint itself is unreachable, which stops the stage; a rerun resumes after the
records already written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from lai.records import InstructRecord


@dataclass(frozen=True)
class InstructRequest:
    id: str
    source_ids: list[str]
    task: str
    strategy: str
    n_requested: int
    messages: list[dict[str, str]]
    #: JSON schema the reply should follow, when the endpoint supports structured output.
    schema: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: provenance: the template the prompt was rendered from, and its hash
    template: str = ""
    template_hash: str = ""


class Instructor(ABC):
    model_name: str = "instructor"
    concurrency: int = 1

    def check(self) -> None:
        """Fail fast, before any work, when the endpoint cannot be reached."""

    @abstractmethod
    def complete(self, request: InstructRequest) -> InstructRecord: ...

    def close(self) -> None:
        pass


def record_for(request: InstructRequest, *, status: str, model: str, **outcome: Any) -> InstructRecord:
    """The record of one request: what was asked, copied from the request, plus its outcome."""
    return InstructRecord(
        id=request.id,
        source_ids=request.source_ids,
        task=request.task,
        strategy=request.strategy,
        n_requested=request.n_requested,
        messages=request.messages,
        status=status,
        template=request.template,
        template_hash=request.template_hash,
        model=model,
        **outcome,
    )


def failed_record(request: InstructRequest, model: str, error: str, seconds: float = 0.0) -> InstructRecord:
    return record_for(request, status="failed", model=model, error=error, seconds=seconds)
