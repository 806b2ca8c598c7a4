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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lai.records import Attempt, GeneratedSample

NO_DIAGNOSIS = "(no diagnosis: not shown to the instructor, or its reply had none)"


def diagnosis_of(samples: list[GeneratedSample]) -> str:
    return next((s.diagnosis.strip() for s in samples if s.diagnosis.strip()), "")


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
    entries = []
    for attempt in sorted(errors, key=lambda a: a.id):
        own = by_error.get(attempt.id, [])
        entries.append(
            {
                "id": attempt.id,
                "task": attempt.task,
                "question": attempt.question,
                "response": attempt.response,
                "reference": attempt.reference,
                "diagnosis": diagnosis_of(own),
                "fixed": attempt.id in fixed,
                "samples": [
                    {"id": s.id, "question": s.question, "answer": s.answer, "kept": s.kept, "drop_reason": s.drop_reason}
                    for s in own
                ],
            }
        )
    diagnosed = [e for e in entries if e["diagnosis"]]
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
    undiagnosed = [e for e in entries if not e["diagnosis"]]
    if undiagnosed:
        result.append(
            {
                "label": NO_DIAGNOSIS,
                "n": len(undiagnosed),
                "fixed": sum(e["fixed"] for e in undiagnosed),
                "kept_samples": sum(s["kept"] for e in undiagnosed for s in e["samples"]),
                "errors": undiagnosed,
            }
        )
    result.sort(key=lambda g: (g["label"] == NO_DIAGNOSIS, -g["n"], g["label"]))
    return {"threshold": threshold, "groups": result}
