"""The parse stage: instructor replies -> generated samples, each kept or dropped with a reason.

Checks here are the format checks every sample must pass: the task's own shape check
(a question with numbers and a numeric answer for math), no copy of the source
question, no copy of the example in the prompt, no duplicate within the run. Deeper
checks (re-solving, sandboxed tests, decontamination) build on the same records.
"""

from __future__ import annotations

import re
from collections import Counter

from lai.instructor.reply_json import parse_reply
from lai.records import GeneratedSample, InstructRecord
from lai.tasks.base import SampleRejected, Task


def normalize_text(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def is_near_copy(text: str, originals: set[str], threshold: float = 0.7) -> bool:
    """True when ``text`` repeats one of ``originals``, whole, in part, or with a few words changed.

    Weak instructors copy the prompt's example with its last sentence cut off, or swap a
    number; exact matching misses both. Word-set overlap (Jaccard) is enough at this scale;
    embedding near-duplicates are a separate, optional check.
    """
    words = set(text.split())
    for original in originals:
        if not original:
            continue
        if text == original or (len(text) >= 20 and (text in original or original in text)):
            return True
        other = set(original.split())
        if words and other and len(words & other) / len(words | other) >= threshold:
            return True
    return False


def example_questions(record: InstructRecord) -> set[str]:
    """Questions quoted as the format example in the prompt itself."""
    prompt = "\n".join(m["content"] for m in record.messages)
    return {normalize_text(q) for q in re.findall(r'"question":\s*"((?:[^"\\]|\\.)*)"', prompt)}


def provenance(record: InstructRecord) -> dict[str, object]:
    """Where a sample came from, read off the request it answers.

    Error-driven requests (le, lec) list the error first and, for LEC, the correct
    neighbours after it; the ``random`` baseline lists the pool row it imitates.
    """
    first, rest = (record.source_ids[0] if record.source_ids else ""), list(record.source_ids[1:])
    from_error = record.strategy != "random"
    return {
        "request_id": record.id,
        "source_ids": record.source_ids,
        "task": record.task,
        "strategy": record.strategy,
        "error_id": first if from_error else "",
        "neighbour_ids": rest if from_error else [],
        "row_id": "" if from_error else first,
        "instructor_model": record.model,
        "template": record.template,
        "template_hash": record.template_hash,
    }


def _sample(
    record: InstructRecord, key: str, iteration: int, fields: dict[str, str], reason: str | None = None, **extra: object
) -> GeneratedSample:
    return GeneratedSample(
        id=f"{record.id}#{key}",
        question=fields.get("question", ""),
        solution=fields.get("solution", ""),
        answer=fields.get("answer", ""),
        kept=reason is None,
        drop_reason=reason,
        iteration=iteration,
        diagnosis=fields.get("diagnosis", ""),
        raw=fields.get("raw", ""),
        **provenance(record),  # type: ignore[arg-type]
        **extra,  # type: ignore[arg-type]
    )


def unchecked_fields(item: dict[str, object], reason: SampleRejected) -> tuple[str, str, str] | None:
    """With the format check off: the raw fields, if there is anything to train on at all."""
    question = str(item.get("question") or "").strip()
    solution = str(item.get("solution") or item.get("explanation") or "").strip()
    answer = str(item.get("answer") if item.get("answer") is not None else item.get("tests") or "").strip()
    options = item.get("options")
    if isinstance(options, list):
        options = dict(zip("ABCDEFGHIJ", options, strict=False))
    if question and isinstance(options, dict) and options:
        # Multiple choice: the options travel in the question text (as check_generated
        # renders them); without them the answer letter would point at nothing.
        lines = (f"{str(k).strip().strip('().').upper()}. {' '.join(str(v).split())}" for k, v in options.items())
        question = question + "\n" + "\n".join(lines)
    return (question, solution, answer) if question and (solution or answer) else None


def parse_records(
    records: list[InstructRecord],
    tasks: dict[str, Task],
    sources: dict[str, str],
    iteration: int,
    check_format: bool = True,
) -> list[GeneratedSample]:
    """Deterministic: the same records always give the same samples and verdicts.

    ``check_format=False`` keeps samples the task's shape check rejects (when they have a
    question and an answer or solution at all), noting the rejection in ``checks``.
    """
    samples: list[GeneratedSample] = []
    seen: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.id):

        def drop(key: str, reason: str, record: InstructRecord = record, **fields: str) -> None:
            samples.append(_sample(record, key, iteration, fields, reason))

        if record.status != "ok":
            drop("request", f"request failed: {record.error}")
            continue
        parsed = parse_reply(record.reply)
        if not parsed.items:
            reason = parsed.problem
            if record.finish_reason == "length":
                reason += " (reply cut off at the token limit)"
            drop("reply", f"unparseable reply: {reason}", raw=record.reply[:4000], diagnosis=parsed.diagnosis)
            continue
        task = tasks[record.task]
        banned = example_questions(record) | {normalize_text(sources.get(s, "")) for s in record.source_ids}
        for index, item in enumerate(parsed.items):
            fields = {k: str(item.get(k, "")) for k in ("question", "solution", "answer")}
            fields["diagnosis"] = parsed.diagnosis
            checks: dict[str, str] = {}
            try:
                question, solution, answer = task.check_generated(item)
            except SampleRejected as reason:
                unchecked = None if check_format else unchecked_fields(item, reason)
                if unchecked is None:
                    drop(str(index), f"format: {reason}", **fields)
                    continue
                question, solution, answer = unchecked
                checks["format"] = f"not checked (would fail: {reason})"
            key = normalize_text(question)
            if is_near_copy(key, banned):
                drop(str(index), "copy: repeats the source question or the prompt's example", **fields)
                continue
            if key in seen:
                drop(str(index), f"duplicate: same question as {seen[key]}", **fields)
                continue
            seen[key] = f"{record.id}#{index}"
            fields.update(question=question, solution=solution, answer=answer)
            samples.append(_sample(record, str(index), iteration, fields, checks=checks or {"format": "ok"}))
    return samples


def drop_reasons(samples: list[GeneratedSample]) -> dict[str, int]:
    """Counts by category: the words before the first colon of each reason."""
    return dict(Counter((s.drop_reason or "").split(":")[0] for s in samples if not s.kept))
