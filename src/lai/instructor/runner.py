"""Send instructor requests concurrently and append each reply the moment it arrives.

Requests whose id already has a record are never sent again. When the endpoint is lost
(an :class:`InstructorError`), no new request is started, the replies already in flight
are still written, and then the error goes up: a rerun sends only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from lai.instructor.base import Instructor, InstructRequest
from lai.progress import NullProgress, Progress
from lai.records import InstructRecord
from lai.store import JsonlWriter, read_records


def pending_requests(requests: list[InstructRequest], out: Path) -> list[InstructRequest]:
    done = {r.id for r in read_records(out, InstructRecord)}
    return [r for r in requests if r.id not in done]


def run_requests(
    instructor: Instructor,
    requests: list[InstructRequest],
    out: Path,
    *,
    total: int | None = None,
    progress: Progress | None = None,
    max_cost: float | None = None,
    label: str = "instruct",
) -> None:
    total = total if total is not None else len(requests)
    bar = (progress or NullProgress()).start(label, total)
    bar.advance(total - len(requests))
    with JsonlWriter(out) as writer:

        def on_record(record: InstructRecord) -> None:
            writer.write([record])
            bar.advance(1)

        run_all = getattr(instructor, "run_all", None)
        if run_all is not None:  # an async client paces and retries the whole stage itself
            run_all(requests, on_record, max_cost=max_cost)
        else:
            _run_in_threads(instructor, requests, on_record)
    bar.close()


def _run_in_threads(
    instructor: Instructor, requests: list[InstructRequest], on_record: Callable[[InstructRecord], None]
) -> None:
    first_error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=instructor.concurrency) as pool:
        futures = {pool.submit(instructor.complete, request) for request in requests}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None:
                    first_error = first_error or error
                    # Stop sending new requests, but keep (and write) the replies already
                    # in flight: they are paid for.
                    for queued in futures:
                        queued.cancel()
                    continue
                on_record(future.result())
    if first_error is not None:
        raise first_error
