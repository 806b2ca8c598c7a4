"""Answer samples with a target and score them, appending records as batches finish.

Shared by the collect stage (training pools) and the evaluate stage (benchmarks), so a
score means the same thing in both places. Already-written ids are skipped, which is
what makes both stages resumable.
"""

from __future__ import annotations

from pathlib import Path

from lai.models.base import Target
from lai.progress import NullProgress, Progress
from lai.records import Attempt, Sample
from lai.store import JsonlWriter, read_records
from lai.tasks.base import Task


def answer_and_score(
    target: Target,
    tasks: dict[str, Task],
    samples: list[Sample],
    out: Path,
    *,
    batch_size: int,
    max_new_tokens: int,
    progress: Progress | None = None,
    label: str = "answer",
) -> list[Attempt]:
    done = {a.id: a for a in read_records(out, Attempt)}
    pending = [s for s in samples if s.id not in done]
    bar = (progress or NullProgress()).start(label, len(samples))
    bar.advance(len(samples) - len(pending))
    with JsonlWriter(out) as writer:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            prompts = [tasks[s.task].prompt(s) for s in batch]
            responses = target.generate(prompts, max_new_tokens)
            attempts = []
            for sample, prompt, response in zip(batch, prompts, responses, strict=True):
                score = tasks[sample.task].score(sample, response)
                attempts.append(
                    Attempt(
                        id=sample.id,
                        task=sample.task,
                        question=sample.question,
                        reference=sample.reference,
                        prompt=prompt,
                        response=response,
                        extracted=score.extracted,
                        correct=score.correct,
                        reason=score.reason,
                    )
                )
            writer.write(attempts)
            done.update((a.id, a) for a in attempts)
            bar.advance(len(batch))
    bar.close()
    return [done[s.id] for s in samples]


def accuracy(attempts: list[Attempt]) -> dict[str, float | int]:
    correct = sum(a.correct for a in attempts)
    return {"n": len(attempts), "correct": correct, "score": correct / len(attempts) if attempts else 0.0}
