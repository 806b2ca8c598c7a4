"""Answer samples with a target and score them, appending records as batches finish.

Shared by the collect stage (training pools), the evaluate stage (benchmarks) and
``lai eval``, so a score means the same thing everywhere. Already-written ids are
skipped, which is what makes all three resumable. Two ways to answer:

- ``generate``: greedy generation with the task's prompt and stop strings, then the
  task's answer extraction;
- ``loglikelihood``: for multiple-choice tasks, the option whose continuation the model
  finds most likely (lm-eval's ``acc``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from lai.errors import ConfigError
from lai.progress import NullProgress, Progress, RowHook, RowTicker
from lai.records import Attempt, Sample, Score
from lai.store import JsonlWriter, read_records
from lai.targets.base import Target
from lai.tasks.base import Task

log = logging.getLogger(__name__)

#: ``auto``: each task's own :meth:`Task.scoring_mode` (a collect stage over pools of several tasks).
Mode = Literal["auto", "generate", "loglikelihood"]
LETTERS = "ABCDEFGHIJ"


def _attempt(task: Task, sample: Sample, prompt: object, response: str, score: Score, protocol: str) -> Attempt:
    return Attempt(
        id=sample.id,
        task=sample.task,
        question=sample.question,
        reference=sample.reference,
        prompt=prompt,  # type: ignore[arg-type]
        response=response,
        extracted=score.extracted,
        correct=score.correct,
        reason=score.reason,
        protocol=protocol,
        metrics=score.metrics,
        group=task.group(sample),
    )


def _generate_batch(
    target: Target, task: Task, batch: list[Sample], protocol: str, max_new_tokens: int
) -> list[Attempt]:
    spec = task.generation(protocol)
    prompts = [task.prompt(s, protocol) for s in batch]
    responses = target.generate(prompts, spec.max_new_tokens or max_new_tokens, stop=spec.stop)
    scores = task.score_many(batch, responses, protocol)
    return [_attempt(task, s, p, r, c, protocol) for s, p, r, c in zip(batch, prompts, responses, scores, strict=True)]


def lm_eval_acc_norm(continuations: list[str], logliks: list[float], delimiter: str = " ") -> int:
    """lm-eval's ``acc_norm`` choice: argmax of log-likelihood / character length.

    lm-eval 0.4.13 (``ConfigurableTask.process_results``) divides by ``len(choice)`` of the
    ``doc_to_choice`` strings, i.e. characters of the option *without* the target delimiter;
    byte length is its separate ``acc_bytes`` metric.
    """
    lengths = [max(len(c.removeprefix(delimiter)), 1) for c in continuations]
    return max(range(len(logliks)), key=lambda i: logliks[i] / lengths[i])


def _loglikelihood_batch(target: Target, task: Task, batch: list[Sample], protocol: str) -> list[Attempt]:
    items = [task.choices(s, protocol) for s in batch]
    if any(item is None for item in items):
        raise ConfigError(f"task {task.name} cannot be scored by log-likelihood", hint="use scoring: generate")
    pairs = [(item.context, c) for item in items for c in item.continuations]  # type: ignore[union-attr]
    values = iter(target.loglikelihood(pairs))
    attempts = []
    for sample, item in zip(batch, items, strict=True):
        assert item is not None
        logliks = [next(values) for _ in item.continuations]
        score = task.score_loglikelihoods(sample, item, logliks, protocol)
        if score is None:
            best = max(range(len(logliks)), key=logliks.__getitem__)
            letter = LETTERS[best]
            right = best == item.gold
            reason = f"chose {letter} (log-likelihood {logliks[best]:.2f}), expected {LETTERS[item.gold]}"
            metrics = {"acc": right, "acc_norm": lm_eval_acc_norm(item.continuations, logliks) == item.gold}
            score = Score(right, letter, reason, metrics=metrics)
        response = " ".join(f"{LETTERS[i] if i < len(LETTERS) else i}={v:.3f}" for i, v in enumerate(logliks))
        attempts.append(_attempt(task, sample, item.context, response, score, protocol))
    return attempts


def answer_batches(
    target: Target,
    tasks: dict[str, Task],
    samples: list[Sample],
    protocol: str,
    mode: Mode,
    batch_size: int,
    max_new_tokens: int,
) -> Iterator[list[Attempt]]:
    """Answer ``samples`` a batch at a time (one task per batch), yielding each batch's records."""
    by_task: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_task[sample.task].append(sample)
    for task_name, todo in by_task.items():
        task = tasks[task_name]
        task_mode = task.scoring_mode(protocol) if mode == "auto" else mode
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            if task_mode == "loglikelihood":
                yield _loglikelihood_batch(target, task, batch, protocol)
            else:
                yield _generate_batch(target, task, batch, protocol, max_new_tokens)


def write_answers(
    samples: list[Sample],
    out: Path,
    answer: Callable[[list[Sample]], Iterable[list[Attempt]]],
    *,
    progress: Progress | None = None,
    label: str = "answer",
    rows: Callable[[RowHook | None], None] | None = None,
) -> list[Attempt]:
    """The resumable part of answering: skip ids already in ``out``, append each batch that
    ``answer(pending)`` yields the moment it arrives, return the records in sample order.

    ``answer`` is this process's target (:func:`answer_batches`) or a Ray pool
    (:mod:`lai.ray_cluster`); either way the file and its guarantees are the same.
    ``rows``, if given, installs (and at the end removes) a per-row hook in whatever
    answers, so the bar moves as each row finishes instead of once per batch.
    """
    done = {a.id: a for a in read_records(out, Attempt)}
    pending = [s for s in samples if s.id not in done]
    if pending and len(pending) < len(samples):
        log.info("resume: %s: found %d of %d answers on disk, %d to go", label, len(samples) - len(pending), len(samples), len(pending))
    bar = (progress or NullProgress()).start(label, len(samples))
    bar.advance(len(samples) - len(pending))
    ticker = RowTicker(bar)
    if rows is not None:
        rows(ticker.tick)
    try:
        if pending:
            with JsonlWriter(out) as writer:
                for attempts in answer(pending):
                    writer.write(attempts)
                    done.update((a.id, a) for a in attempts)
                    ticker.batch_written(len(attempts))
    finally:
        if rows is not None:
            rows(None)
        bar.close()
    return [done[s.id] for s in samples]


def answer_and_score(
    target: Target,
    tasks: dict[str, Task],
    samples: list[Sample],
    out: Path,
    *,
    batch_size: int,
    max_new_tokens: int,
    protocol: str = "paper",
    mode: Mode = "generate",
    progress: Progress | None = None,
    label: str = "answer",
) -> list[Attempt]:
    def answer(pending: list[Sample]) -> Iterator[list[Attempt]]:
        return answer_batches(target, tasks, pending, protocol, mode, batch_size, max_new_tokens)

    def rows(hook: RowHook | None) -> None:
        target.row_done = hook

    return write_answers(samples, out, answer, progress=progress, label=label, rows=rows)


def accuracy(attempts: list[Attempt]) -> dict[str, float | int]:
    correct = sum(a.correct for a in attempts)
    return {"n": len(attempts), "correct": correct, "score": correct / len(attempts) if attempts else 0.0}


def summarize(attempts: list[Attempt]) -> dict[str, object]:
    """Accuracy, every extra metric, and the per-group breakdown (macro average over groups)."""
    summary: dict[str, object] = dict(accuracy(attempts))
    metric_names = sorted({name for a in attempts for name in a.metrics})
    for name in metric_names:
        summary[name] = sum(a.metrics.get(name, False) for a in attempts) / len(attempts)
    groups: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        if attempt.group:
            groups[attempt.group].append(attempt)
    if groups:
        summary["groups"] = {g: accuracy(rows) for g, rows in sorted(groups.items())}
        summary["macro"] = sum(float(accuracy(rows)["score"]) for rows in groups.values()) / len(groups)
    return summary
