"""Send instructor requests concurrently and append each reply the moment it arrives.

Requests whose id already has a good record are never sent again; a request whose
records all say "failed" is sent again on a rerun (the earlier failed lines stay in the
file: the append-only history of its attempts, read back by :func:`final_records`).
When the endpoint is lost (an :class:`InstructorError`), no new request is started, the
replies already in flight are still written, and then the error goes up: a rerun sends
only what is missing.

A stage in which more than ``max_failed_share`` of the requests end failed is not done:
:func:`check_failures` stops it with one line naming the commonest cause and its fix,
instead of training on nothing and reporting success.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from lai.errors import InstructorError
from lai.instructor.base import Instructor, InstructRequest
from lai.progress import NullProgress, Progress
from lai.records import InstructRecord
from lai.store import JsonlWriter, read_records

#: The default of ``instructor.max_failed_share``.
MAX_FAILED_SHARE = 0.5


def final_records(out: Path) -> dict[str, InstructRecord]:
    """One record per request id: its good record if any, else its last failed one."""
    final: dict[str, InstructRecord] = {}
    for record in read_records(out, InstructRecord):
        kept = final.get(record.id)
        if kept is None or kept.status != "ok":
            final[record.id] = record
    return final


def attempts_by_id(out: Path) -> Counter[str]:
    """How many records (stage attempts) each request id has in ``out``."""
    return Counter(r.id for r in read_records(out, InstructRecord))


def pending_requests(requests: Iterable[InstructRequest], out: Path) -> list[InstructRequest]:
    """The requests without a good record: never answered, or failed every time so far."""
    done = {i for i, r in final_records(out).items() if r.status == "ok"}
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

        instructor.run_all(requests, on_record, max_cost=max_cost)
    bar.close()


# ---- a stage that mostly failed ---------------------------------------------------------

_CAUSES: tuple[tuple[str, str, str], ...] = (
    # (pattern of the recorded error, cause as shown, the fix)
    (r"HTTP 404", "HTTP 404", "check instructor.base_url (it usually ends in /v1) and instructor.model"),
    (r"HTTP 40[13]", "HTTP 401/403", "check instructor.api_key_env and that the key is valid"),
    (r"HTTP 400", "HTTP 400", "check instructor.model, max_tokens and structured_output for this endpoint"),
    (r"HTTP 422", "HTTP 422", "check instructor.model, max_tokens and structured_output for this endpoint"),
    (r"HTTP 429", "HTTP 429 (rate limited)", "lower instructor.rpm / tpm / concurrency, or raise max_retries"),
    (r"HTTP 5\d\d", "HTTP 5xx", "the endpoint is failing; rerun later (failed requests are retried)"),
    (r"timeout", "timeouts", "raise instructor.timeout_s or lower instructor.max_tokens"),
    (r"connection lost|unreachable", "dropped connections", "check the endpoint; rerun to retry the failed requests"),
    (r"malformed|no choices", "malformed replies", "check that instructor.base_url is an OpenAI-compatible endpoint"),
)


def failure_cause(errors: Iterable[str], base_url: str | None) -> tuple[str, str, int]:
    """(commonest cause, its fix, how many errors share it) of the failed records."""
    counts: Counter[tuple[str, str]] = Counter()
    for error in errors:
        for pattern, cause, fix in _CAUSES:
            if re.search(pattern, error, re.IGNORECASE):
                counts[(cause, fix)] += 1
                break
        else:
            counts[(error.split(":")[0][:80] or "unknown error", "see instruct.jsonl for the errors")] += 1
    if not counts:
        return "unknown error", "see the records", 0
    (cause, fix), n = counts.most_common(1)[0]
    if base_url:
        cause = f"{cause} from {base_url}"
    return cause, fix, n


def check_failures(
    records: Iterable[InstructRecord],
    *,
    max_failed_share: float = MAX_FAILED_SHARE,
    base_url: str | None = None,
    label: str = "instruct",
) -> None:
    """Refuse to call a stage done when more than ``max_failed_share`` of its requests failed.

    The records stay; a rerun (after the fix) sends the failed requests again.
    """
    total = failed = 0
    errors: list[str] = []
    for record in records:
        total += 1
        if record.status != "ok":
            failed += 1
            errors.append(record.error or "")
    if not total or failed <= max_failed_share * total:
        return
    cause, fix, _ = failure_cause(errors, base_url)
    raise InstructorError(
        f"{failed} of {total} {label} requests failed, most with {cause}: {fix}",
        hint=f"the stage is not done; rerun the same command to retry the failed requests; "
        f"instructor.max_failed_share is {max_failed_share:g}",
    )

