"""The export's rows: which samples a run holds, and each as one row of the dataset.

Each row is one generated sample: the question, solution and answer the instructor
wrote (or the real row a baseline picked), a ready-to-train ``messages`` chat (the chat
the train stage teaches, :func:`lai.train.base.training_example`; lai computes the loss
on the last turn only), and the sample's provenance. With ``include_dropped`` the rows
also have ``kept``, ``drop_reason`` and ``raw`` columns.

Iterations whose ``verified.jsonl`` is missing (runs made before the verify stage, or
stopped before it) fall back to ``generated.jsonl``; the card says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lai.errors import LaiError
from lai.records import GeneratedSample
from lai.store import RunStore, read_records
from lai.tasks.base import Task
from lai.train.base import training_example

#: The dataset's one split: ``load_dataset(repo)`` and ``load_from_disk`` both give it.
SPLIT = "train"


def read_samples(run_dir: Path) -> tuple[dict[int, list[GeneratedSample]], dict[int, str]]:
    """Every generated sample by iteration, and the file each iteration's came from."""
    store = RunStore(run_dir)
    samples, sources = {}, {}
    for k in store.iterations():
        for name in ("verified.jsonl", "generated.jsonl"):
            path = store.path(k, name)
            if path.is_file():
                try:
                    samples[k] = read_records(path, GeneratedSample)
                except (ValueError, TypeError) as error:
                    raise LaiError(f"{path} is damaged: {error}") from None
                sources[k] = name
                break
    return samples, sources


def training_messages(task: Task, sample: GeneratedSample) -> list[dict[str, str]]:
    """The chat the train stage teaches: the task's prompt, then the target's answer."""
    example = training_example(task, sample)
    prompt: Any = example.prompt
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    return [*turns, {"role": "assistant", "content": example.completion}]


def features(include_dropped: bool) -> Any:
    from datasets import Features, Value

    # List literals (not ``datasets.List``, new in 4.0) mean "list of" in every supported version.
    text = Value("string")
    columns: dict[str, Any] = {
        "id": text, "iteration": Value("int32"), "task": text, "question": text, "solution": text, "answer": text,
        "messages": [{"role": text, "content": text}],
        "strategy": text, "error_id": text, "source_ids": [text], "neighbour_ids": [text], "row_id": text,
        "diagnosis": text, "instructor_model": text, "template": text, "template_hash": text, "checks": text,
    }  # fmt: skip
    if include_dropped:
        columns.update(kept=Value("bool"), drop_reason=text, raw=text)
    return Features(columns)


def dataset_row(task: Task, sample: GeneratedSample, include_dropped: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": sample.id, "iteration": sample.iteration, "task": sample.task, "question": sample.question,
        "solution": sample.solution, "answer": sample.answer, "messages": training_messages(task, sample),
        "strategy": sample.strategy, "error_id": sample.error_id, "source_ids": list(sample.source_ids),
        "neighbour_ids": list(sample.neighbour_ids), "row_id": sample.row_id, "diagnosis": sample.diagnosis,
        "instructor_model": sample.instructor_model, "template": sample.template,
        "template_hash": sample.template_hash, "checks": json.dumps(sample.checks, ensure_ascii=False, sort_keys=True),
    }  # fmt: skip
    if include_dropped:
        row.update(kept=sample.kept, drop_reason=sample.drop_reason, raw=sample.raw)
    return row
