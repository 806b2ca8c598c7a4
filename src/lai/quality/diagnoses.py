"""Group errors by what the instructor said the target got wrong.

Each instructor reply opens with a diagnosis ("the student adds when it should
multiply"). Across dozens of errors the same weakness comes back in different words;
grouping them shows a user *which* weaknesses the iteration addressed, and with the
retest, which of them training fixed.

Diagnoses are free text, so they are grouped by meaning: sentence embeddings, then a
single greedy pass that puts each diagnosis in the first group whose founding diagnosis
is at least ``threshold`` similar (cosine), or opens a new group. Hand-written because
it is ten lines and deterministic (sorted input, no random initialisation), which a
clustering library's k-means would not be.

A diagnosis is checked like a sample before it is believed: a weak instructor copies
the example diagnosis from the prompt template, or restates the question, and grouping
those would present a copy as the instructor's finding. Such errors go to one group,
:data:`NO_USABLE_DIAGNOSIS`, each with the reason (:func:`diagnosis_problem`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from lai.errors import ConfigError
from lai.quality.parse import is_near_copy, normalize_text
from lai.records import Attempt, GeneratedSample

NO_DIAGNOSIS = "(no diagnosis: not shown to the instructor, or its reply had none)"
NO_USABLE_DIAGNOSIS = "(no usable diagnosis: the reply copied the prompt's example diagnosis or repeated the question)"
#: Group labels that are not a diagnosis the instructor made.
NOT_DIAGNOSES = frozenset({NO_DIAGNOSIS, NO_USABLE_DIAGNOSIS})
COPIED_EXAMPLE = "copies the prompt's example diagnosis"
REPEATS_QUESTION = "repeats the question"


def diagnosis_of(samples: list[GeneratedSample]) -> str:
    return next((s.diagnosis.strip() for s in samples if s.diagnosis.strip()), "")


def example_diagnoses(templates: Iterable[str]) -> set[str]:
    """The example diagnoses quoted in these prompt templates, normalised for comparison."""
    from lai.instructor.prompts import template_text

    found = set()
    for name in sorted(set(templates)):
        try:
            text = template_text(name)
        except ConfigError:  # a template of an older lai: nothing to compare with
            continue
        found |= {normalize_text(d) for d in re.findall(r'"diagnosis":\s*"((?:[^"\\]|\\.)*)"', text)}
    return found


def diagnosis_problem(diagnosis: str, question: str, examples: set[str]) -> str | None:
    """Why ``diagnosis`` is not the instructor's own account of this error, or None if it may be.

    The same test the parse stage applies to a sample's question (:func:`is_near_copy`):
    whole, in part, or with a few words changed.
    """
    text = normalize_text(diagnosis)
    if is_near_copy(text, examples):
        return COPIED_EXAMPLE
    if is_near_copy(text, {normalize_text(question)}):
        return REPEATS_QUESTION
    return None


def cluster(texts: list[str], embedder: Any, threshold: float) -> list[int]:
    """Group index per text; group 0 is opened by the first text."""
    if not texts:
        return []
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    founders: list[int] = []
    labels = []
    for i, vector in enumerate(vectors):
        similarities = [float(vector @ vectors[f]) for f in founders]
        best = int(np.argmax(similarities)) if similarities else -1
        if best >= 0 and similarities[best] >= threshold:
            labels.append(best)
        else:
            founders.append(i)
            labels.append(len(founders) - 1)
    return labels


def group_by_diagnosis(
    errors: list[Attempt],
    samples: list[GeneratedSample],
    fixed: set[str],
    embedder: Any,
    threshold: float = 0.7,
) -> dict[str, Any]:
    """Errors with their diagnosis, samples and retest outcome, grouped by diagnosis."""
    by_error: dict[str, list[GeneratedSample]] = {}
    for sample in samples:
        if sample.error_id:
            by_error.setdefault(sample.error_id, []).append(sample)
    examples = example_diagnoses(s.template for s in samples if s.template)
    entries = []
    for attempt in sorted(errors, key=lambda a: a.id):
        own = by_error.get(attempt.id, [])
        diagnosis = diagnosis_of(own)
        entries.append(
            {
                "id": attempt.id,
                "task": attempt.task,
                "question": attempt.question,
                "response": attempt.response,
                "reference": attempt.reference,
                "diagnosis": diagnosis,
                "diagnosis_problem": diagnosis_problem(diagnosis, attempt.question, examples) if diagnosis else None,
                "fixed": attempt.id in fixed,
                "samples": [
                    {"id": s.id, "question": s.question, "answer": s.answer, "kept": s.kept, "drop_reason": s.drop_reason}
                    for s in own
                ],
            }
        )
    diagnosed = [e for e in entries if e["diagnosis"] and not e["diagnosis_problem"]]
    labels = cluster([e["diagnosis"] for e in diagnosed], embedder, threshold)
    groups: dict[int, list[dict[str, Any]]] = {}
    for entry, label in zip(diagnosed, labels, strict=True):
        groups.setdefault(label, []).append(entry)
    result = [
        {
            "label": members[0]["diagnosis"],
            "n": len(members),
            "fixed": sum(m["fixed"] for m in members),
            "kept_samples": sum(s["kept"] for m in members for s in m["samples"]),
            "errors": members,
        }
        for members in groups.values()
    ]
    for label, members in (
        (NO_USABLE_DIAGNOSIS, [e for e in entries if e["diagnosis"] and e["diagnosis_problem"]]),
        (NO_DIAGNOSIS, [e for e in entries if not e["diagnosis"]]),
    ):
        if members:
            result.append(
                {
                    "label": label,
                    "n": len(members),
                    "fixed": sum(e["fixed"] for e in members),
                    "kept_samples": sum(s["kept"] for e in members for s in e["samples"]),
                    "errors": members,
                }
            )
    result.sort(key=lambda g: (g["label"] in NOT_DIAGNOSES, -g["n"], g["label"]))
    return {"threshold": threshold, "groups": result}
