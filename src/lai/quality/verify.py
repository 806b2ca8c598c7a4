"""The verify stage's checks: is a generated sample right, new, and clean?

The parse stage only knows a sample's shape. Before anyone trains on it, each sample the
parser kept goes through, in this order (cheap and local first, paid last):

1. **duplicates**: exact and embedding near-duplicates within the generated set, and
   against the training pools the run draws from (:mod:`lai.quality.dedup`);
2. **decontamination**: word 13-gram overlap and embedding near copies against every
   evaluation set in the config (:mod:`lai.quality.decontaminate`); the contamination
   rate per benchmark is measured on all samples that reach this stage, whatever the
   other checks say, so it is comparable across runs;
3. **execution** (code): the sample's reference solution must pass its own tests in the
   sandbox, as a benchmark answer would be scored;
4. **re-solving** (math, multiple choice): the instructor answers the sample's question
   ``n`` more times without seeing the stated answer; the sample stays only when a strict
   majority of those answers equals the stated one. A sample whose own answer is wrong
   rarely survives this, and it costs ``n`` short requests per sample.

Every check can be switched off in ``verify:``; every drop keeps the sample, its reason
and the evidence (``GeneratedSample.checks``). Samples built from real pool rows (the
``original`` and ``nearest`` baselines) skip the correctness checks and the pool
duplicate check: their answers are the dataset's own and they *are* pool rows.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from lai.config import VerifyConfig
from lai.instructor.base import InstructRequest
from lai.instructor.prompts import render, template_hash
from lai.instructor.reply_json import parse_reply
from lai.quality.decontaminate import Contamination, ContaminationIndex, contamination_rates
from lai.quality.dedup import find_duplicates, match_pool
from lai.records import GeneratedSample, InstructRecord, Sample
from lai.strategies import uses_instructor
from lai.tasks.base import Task


def drop(sample: GeneratedSample, reason: str, check: str, evidence: str) -> GeneratedSample:
    return dataclasses.replace(sample, kept=False, drop_reason=reason, checks={**sample.checks, check: evidence})


def note(sample: GeneratedSample, check: str, evidence: str) -> GeneratedSample:
    return dataclasses.replace(sample, checks={**sample.checks, check: evidence})


# ---- 1. duplicates ------------------------------------------------------------------------


def check_duplicates(
    samples: list[GeneratedSample], pool: list[tuple[str, str]], embedder: object, threshold: float, against_pool: bool
) -> list[GeneratedSample]:
    """Drop later copies within the set, and instructor samples that copy a pool row."""
    live = [i for i, s in enumerate(samples) if s.kept]
    texts = [samples[i].question for i in live]
    within = find_duplicates(texts, embedder, threshold)  # type: ignore[arg-type]
    in_pool = match_pool(texts, pool, embedder, threshold) if against_pool and pool else [None] * len(texts)  # type: ignore[arg-type]
    out = list(samples)
    for position, index in enumerate(live):
        sample = samples[index]
        if within[position] is not None:
            earlier, how = within[position]  # type: ignore[misc]
            other = samples[live[earlier]].id
            out[index] = drop(sample, f"duplicate: {how} copy of {other}", "dedup", f"{how} copy of {other}")
        elif in_pool[position] is not None and uses_instructor(sample.strategy):
            row, how = in_pool[position]  # type: ignore[misc]
            out[index] = drop(sample, f"duplicate: {how} copy of training row {row}", "dedup", f"{how} copy of {row}")
        else:
            out[index] = note(sample, "dedup", "unique")
    return out


# ---- 2. decontamination -------------------------------------------------------------------


def check_contamination(
    samples: list[GeneratedSample], index: ContaminationIndex
) -> tuple[list[GeneratedSample], list[Contamination | None], int]:
    """(samples with contaminated ones dropped, the finding per checked sample, #checked).

    Every sample that passed the format check is checked, including ones already dropped
    as duplicates, so the rate describes what the instructor wrote.
    """
    passed_format = ("duplicate", "copy")  # dropped later than the format check
    checked = [i for i, s in enumerate(samples) if s.kept or (s.drop_reason or "").startswith(passed_format)]
    findings = index.check([samples[i].question for i in checked])
    out = list(samples)
    for index_, found in zip(checked, findings, strict=True):
        sample = samples[index_]
        if found is None:
            out[index_] = note(sample, "decontaminate", "clean")
            continue
        evidence = f"{found.benchmark} item {found.item_id} ({found.kind}: {found.detail})"
        out[index_] = drop(sample, f"contaminated: {evidence}", "decontaminate", evidence) if sample.kept else note(
            sample, "decontaminate", evidence
        )
    return out, findings, len(checked)


# ---- 3. execution (code) ------------------------------------------------------------------


ScoreMany = Callable[[str, list[Sample], list[str]], list[Any]]


def check_execution(
    samples: list[GeneratedSample], tasks: dict[str, Task], score_many: ScoreMany | None = None
) -> list[GeneratedSample]:
    """Run each code sample's reference solution against its tests in the sandbox.

    ``score_many(task name, samples, responses)`` runs the programs; by default the task's
    own parallel sandbox runs here, and with a Ray cluster the shards run on its nodes.
    """
    out = list(samples)
    by_task: dict[str, list[int]] = {}
    runs: dict[int, tuple[Sample, str]] = {}
    for i, s in enumerate(samples):
        run = tasks[s.task].runnable_sample(s) if s.kept and uses_instructor(s.strategy) else None
        if run is not None:
            by_task.setdefault(s.task, []).append(i)
            runs[i] = run
    for task_name, indices in by_task.items():
        task = tasks[task_name]
        runnable = [runs[i][0] for i in indices]
        responses = [runs[i][1] for i in indices]
        scores = score_many(task_name, runnable, responses) if score_many else task.score_many(runnable, responses)
        for i, score in zip(indices, scores, strict=True):
            if score.correct:
                out[i] = note(samples[i], "execute", "reference solution passes its tests")
            else:
                out[i] = drop(
                    samples[i], f"failed verification: reference solution fails its tests ({score.reason})",
                    "execute", score.reason,
                )  # fmt: skip
    return out


# ---- 4. re-solving (math, multiple choice) ------------------------------------------------


def needs_resolve(sample: GeneratedSample, tasks: dict[str, Task]) -> bool:
    return sample.kept and uses_instructor(sample.strategy) and tasks[sample.task].resolve_rule is not None


def resolve_requests(
    samples: list[GeneratedSample], tasks: dict[str, Task], n: int, temperature: float, max_tokens: int
) -> list[InstructRequest]:
    """``n`` independent solve requests per sample: ids ``resolve:<sample id>:<j>``.

    ``sample_index`` in ``extra`` makes the n requests distinct in the request cache
    even though their messages are identical.
    """
    requests = []
    for sample in samples:
        if not needs_resolve(sample, tasks):
            continue
        rule = tasks[sample.task].resolve_rule
        assert rule is not None  # needs_resolve
        template = rule.template
        content = render(template, question=sample.question)
        for j in range(n):
            requests.append(
                InstructRequest(
                    id=f"resolve:{sample.id}:{j}", source_ids=[sample.id], task=sample.task,
                    strategy="resolve", n_requested=1, messages=[{"role": "user", "content": content}],
                    schema=rule.schema,
                    extra={"sample_index": j, "temperature": temperature, "max_tokens": max_tokens},
                    template=template, template_hash=template_hash(template),
                )  # fmt: skip
            )
    return requests


#: "answer": "..." or "answer": 42 in a reply that is not valid JSON (cut off, chatter).
#: A quoted value is read whole: "1,000" must not be cut at its comma.
_ANSWER_FIELD = re.compile(r'"answer"\s*:\s*(?:"((?:[^"\\]|\\.)*)"|([^\s",}][^,}\n]*))')


def resolved_answer(reply: str, task: Task) -> str | None:
    """The final answer of one solve reply, normalised like the stated answers are."""
    parsed = parse_reply(reply)
    raw = parsed.items[0].get("answer") if parsed.items else None
    if raw is None:
        match = _ANSWER_FIELD.search(reply)
        raw = next((g for g in match.groups() if g is not None), None) if match else None
    if raw is None:
        return None
    return task.normalize_answer(str(raw))


def check_resolve(
    samples: list[GeneratedSample], tasks: dict[str, Task], records: list[InstructRecord], n: int
) -> list[GeneratedSample]:
    """Keep a sample when more than half of its ``n`` solutions give the stated answer.

    A failed or unreadable solve counts as a vote against: the check must be passed, not
    merely not failed.
    """
    votes: dict[str, list[str | None]] = {}
    for record in records:
        sample_id = record.source_ids[0]
        task = tasks[record.task]
        votes.setdefault(sample_id, []).append(resolved_answer(record.reply, task) if record.status == "ok" else None)
    out = list(samples)
    for i, sample in enumerate(samples):
        if not needs_resolve(sample, tasks):
            continue
        answers = votes.get(sample.id, [])
        # Stated answers are normalised by the format check, unless it was switched off.
        stated = tasks[sample.task].normalize_answer(sample.answer) or sample.answer
        agree = sum(a == stated for a in answers)
        tally = ", ".join(f"{a}x{c}" for a, c in Counter(a or "none" for a in answers).most_common())
        evidence = f"{agree}/{n} solutions give the stated {sample.answer} ({tally or 'no replies'})"
        if agree * 2 > n:
            out[i] = note(sample, "resolve", evidence)
        else:
            out[i] = drop(sample, f"failed verification: {evidence}", "resolve", evidence)
    return out


# ---- the whole stage ----------------------------------------------------------------------


def local_checks(
    samples: list[GeneratedSample],
    tasks: dict[str, Task],
    config: VerifyConfig,
    *,
    pool: Callable[[], list[tuple[str, str]]],
    contamination: Callable[[], ContaminationIndex],
    embedder: Callable[[], object],
    score_many: ScoreMany | None = None,
) -> tuple[list[GeneratedSample], dict[str, object]]:
    """Run the enabled checks 1-3 (nothing paid); return every sample with its verdict and
    a summary. Re-solving (4) is the verify stage's to send: :func:`resolve_requests`,
    then :func:`check_resolve` on the replies.

    The expensive collaborators come as factories so a disabled check never loads an
    embedder or builds an index.
    """
    summary: dict[str, object] = {"checks": []}
    checks: list[str] = summary["checks"]  # type: ignore[assignment]
    if config.dedup.enabled:
        checks.append("dedup")
        samples = check_duplicates(
            samples, pool() if config.dedup.against_pool else [], embedder(),
            config.dedup.threshold, config.dedup.against_pool,
        )  # fmt: skip
    if config.decontaminate.enabled:
        checks.append("decontaminate")
        index = contamination()
        samples, findings, checked = check_contamination(samples, index)
        summary["contamination"] = contamination_rates(findings, list(index.benchmarks), checked)
    if config.execute:
        checks.append("execute")
        samples = check_execution(samples, tasks, score_many)
    return samples, summary


def apply_resolve(
    samples: list[GeneratedSample],
    summary: dict[str, object],
    tasks: dict[str, Task],
    config: VerifyConfig,
    requests: list[InstructRequest],
    records: list[InstructRecord],
) -> tuple[list[GeneratedSample], dict[str, object]]:
    """Check 4 on the replies to :func:`resolve_requests` (the verify stage sends them);
    the samples and summary of :func:`local_checks`, unchanged when re-solving is off."""
    if not config.resolve.enabled:
        return samples, summary
    summary["checks"].append("resolve")  # type: ignore[attr-defined]
    summary["resolve_requests"] = len(requests)
    return check_resolve(samples, tasks, records, config.resolve.n), summary
