"""The instructor protocol: one request (chat messages) in, one record out.

An instructor never raises for a request that merely failed (a 400, a garbage reply):
it returns a record with ``status="failed"`` and the reason, so the stage goes on and
the report can count it. It raises :class:`~lai.errors.InstructorError` only when the
endpoint itself is unreachable, which stops the stage; a rerun resumes after the
records already written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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

    def run_all(
        self,
        requests: Iterable[InstructRequest],
        on_record: Callable[[InstructRecord], None],
        *,
        max_cost: float | None = None,
    ) -> None:
        """A whole stage: every request, ``on_record`` called with each record as it
        arrives (the runner writes it at once). This default sends :meth:`complete` calls
        from ``concurrency`` threads; a paid endpoint overrides it to pace, retry and keep
        to ``max_cost`` across the stage (:mod:`lai.instructor.async_client`).

        An :class:`~lai.errors.InstructorError` stops new requests; the replies already in
        flight are still handed to ``on_record`` (they are paid for), then it is raised.
        """
        first_error: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        pending = iter(requests)  # submitted a few at a time: memory does not grow with the stage
        try:
            futures: set[Future[InstructRecord]] = set()
            while True:
                while first_error is None and len(futures) < 2 * self.concurrency:
                    request = next(pending, None)
                    if request is None:
                        break
                    futures.add(pool.submit(self.complete, request))
                if not futures:
                    break
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    error = future.exception()
                    if error is not None:
                        first_error = first_error or error
                        continue
                    on_record(future.result())
        finally:
            # On Ctrl-C or SIGTERM too: queued requests are dropped, not run to the end
            # (a `with` block would wait for every one of them); those in flight finish.
            pool.shutdown(wait=True, cancel_futures=True)
        if first_error is not None:
            raise first_error

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
