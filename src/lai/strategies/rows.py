"""Shared pieces of the strategies that train on real pool rows or draw at random.

The ``original`` and ``nearest`` baselines train on real training rows instead of
instructor-written samples; ``random`` (and ``original``) draw at random. They need the
same few things, kept here once so the baselines cannot drift apart:

* :func:`teachable_rows`: the candidate rows that can be taught at all (the task gives a
  reference solution for them), by task, in a fixed order;
* :func:`row_sample`: such a row as a :class:`GeneratedSample` with its provenance;
* :func:`allocate`: a budget split over tasks in proportion to weights, within capacities;
* :func:`seeded_rng`: a random generator that depends only on the seed and a label, so a
  draw is the same in every process and independent of other draws.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lai.records import GeneratedSample, Sample
from lai.tasks.base import Task


@dataclass(frozen=True)
class ReferenceRow:
    """A real pool row with the (question, solution, answer) its task teaches for it."""

    sample: Sample
    question: str
    solution: str
    answer: str


def teachable_rows(
    candidates: Iterable[Sample], tasks: Mapping[str, Task]
) -> dict[str, list[ReferenceRow]]:
    """Candidates that have a reference solution, by task, each list sorted by id.

    Rows of tasks not in ``tasks`` and rows whose task gives no reference (e.g. the local
    MBPP train file, which has tests but no reference code) are skipped: there is nothing
    to train on. Sorting by id (and dropping repeated ids) makes every later seeded draw or
    tie-break independent of the order the candidates arrive in.
    """
    unique = {sample.id: sample for sample in candidates if sample.task in tasks}
    rows: dict[str, list[ReferenceRow]] = {}
    for sample_id in sorted(unique):
        sample = unique[sample_id]
        reference = tasks[sample.task].reference_sample(sample)
        if reference is not None:
            rows.setdefault(sample.task, []).append(ReferenceRow(sample, *reference))
    return rows


def row_sample(
    strategy: str,
    row: ReferenceRow,
    iteration: int,
    *,
    error_id: str = "",
    checks: Mapping[str, str] | None = None,
) -> GeneratedSample:
    """A real row as a kept training sample, traceable to the row (and the error, if any).

    No instructor wrote it, so there is no request id; ``source_ids`` lists the error it
    was retrieved for (``nearest``) before the row itself.
    """
    sample = row.sample
    return GeneratedSample(
        id=f"{strategy}:{sample.id}",
        request_id="",
        source_ids=[error_id, sample.id] if error_id else [sample.id],
        task=sample.task,
        question=row.question,
        solution=row.solution,
        answer=row.answer,
        kept=True,
        iteration=iteration,
        strategy=strategy,
        error_id=error_id,
        row_id=sample.id,
        checks=dict(checks or {}),
    )


def allocate(
    total: int, weights: Mapping[str, int], capacity: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Split ``total`` over names in proportion to ``weights``, never above ``capacity``.

    Largest-remainder rounding (ties to the earlier name), so the shares add up to
    ``total`` exactly when capacity allows. What a name cannot take because its capacity
    is too small goes to the others, again in proportion, so a task short of rows does not
    shrink the sample count the baselines are compared at. Names missing from ``capacity``
    have none. Exact integer arithmetic: no float rounding decides a share.
    """
    shares = {name: 0 for name in weights}
    room = {name: (capacity.get(name, 0) if capacity is not None else total) for name in weights}
    remaining = total
    while remaining > 0:
        active = sorted(n for n in weights if weights[n] > 0 and room[n] > shares[n])
        if not active:
            break
        whole = sum(weights[n] for n in active)
        quotas = {n: divmod(remaining * weights[n], whole) for n in active}
        given = 0
        for name in active:
            step = min(quotas[name][0], room[name] - shares[name])
            shares[name] += step
            given += step
        # The units floor rounding left (fewer than there are names), one each, largest
        # remainder first. Units a capped name could not take wait for the next round.
        rounding = remaining - sum(quota for quota, _ in quotas.values())
        for name in sorted(active, key=lambda n: (-quotas[n][1], n))[:rounding]:
            if shares[name] < room[name]:
                shares[name] += 1
                given += 1
        remaining -= given
    return shares


def seeded_rng(seed: int, *labels: object) -> random.Random:
    """A generator for one draw: the same seed and labels give the same numbers anywhere.

    String seeds are hashed with SHA-512 by :mod:`random` (not with Python's salted
    ``hash``), so the draw does not change between processes.
    """
    return random.Random(":".join(str(part) for part in (seed, *labels)))
