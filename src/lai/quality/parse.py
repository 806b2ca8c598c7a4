"""The parse stage: instructor replies -> generated samples, each kept or dropped with a reason.

Checks here are the format checks every sample must pass: the task's own shape check
(a question with numbers and a numeric answer for math), no copy of the source
question, no copy of the example in the prompt, no duplicate within the run. Deeper
checks (re-solving, sandboxed tests, decontamination) build on the same records.
"""

from __future__ import annotations

import re
from collections import Counter

from lai.instructor.parsing import parse_reply
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


def _dropped(
    record: InstructRecord, key: str, reason: str, iteration: int, fields: dict[str, str]
) -> GeneratedSample:
    return GeneratedSample(
        id=f"{record.id}#{key}",
        request_id=record.id,
        source_ids=record.source_ids,
        task=record.task,
        question=fields.get("question", ""),
        solution=fields.get("solution", ""),
        answer=fields.get("answer", ""),
        kept=False,
        drop_reason=reason,
        iteration=iteration,
        diagnosis=fields.get("diagnosis", ""),
        raw=fields.get("raw", ""),
    )


def parse_records(
    records: list[InstructRecord], tasks: dict[str, Task], sources: dict[str, str], iteration: int
) -> list[GeneratedSample]:
    """Deterministic: the same records always give the same samples and verdicts."""
    samples: list[GeneratedSample] = []
    seen: dict[str, str] = {}
    for record in sorted(records, key=lambda r: r.id):

        def drop(key: str, reason: str, record: InstructRecord = record, **fields: str) -> None:
            samples.append(_dropped(record, key, reason, iteration, fields))

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
            try:
                question, solution, answer = task.check_generated(item)
            except SampleRejected as reason:
                drop(str(index), f"format: {reason}", **fields)
                continue
            key = normalize_text(question)
            if is_near_copy(key, banned):
                drop(str(index), "copy: repeats the source question or the prompt's example", **fields)
                continue
            if key in seen:
                drop(str(index), f"duplicate: same question as {seen[key]}", **fields)
                continue
            seen[key] = f"{record.id}#{index}"
            samples.append(
                GeneratedSample(
                    id=f"{record.id}#{index}",
                    request_id=record.id,
                    source_ids=record.source_ids,
                    task=record.task,
                    question=question,
                    solution=solution,
                    answer=answer,
                    kept=True,
                    iteration=iteration,
                    diagnosis=parsed.diagnosis,
                )
            )
    return samples


def drop_reasons(samples: list[GeneratedSample]) -> dict[str, int]:
    """Counts by category: the words before the first colon of each reason."""
    return dict(Counter((s.drop_reason or "").split(":")[0] for s in samples if not s.kept))
