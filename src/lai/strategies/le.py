"""LE, learning from errors (Ying et al., 2024, section 3.2).

Input: the target's wrong attempts (question, its response, the reference answer).
Output: one instructor request per wrong attempt, each asking for
``n = ceil(budget / #wrong) + 1`` new samples, as in the paper, so the kept samples
still reach the budget after some are dropped.
"""

from __future__ import annotations

import math

from lai.instructor.base import InstructRequest
from lai.instructor.prompts import render, template_hash
from lai.records import Attempt
from lai.strategies.base import Strategy
from lai.tasks.base import Task


def samples_per_error(budget: int, errors: int) -> int:
    return math.ceil(budget / errors) + 1 if errors else 0


def reply_schema(task: Task, n: int) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {
            "diagnosis": {"type": "string"},
            "samples": {"type": "array", "items": task.sample_schema, "minItems": n, "maxItems": n},
        },
        "required": ["diagnosis", "samples"],
    }


def error_values(attempt: Attempt, n: int) -> dict[str, object]:
    """The template placeholders every error-driven prompt fills."""
    return {
        "question": attempt.question,
        "response": attempt.response,
        "reference": attempt.reference,
        "reason": attempt.reason,
        "n": n,
    }


def error_request(
    strategy: str,
    attempt: Attempt,
    task: Task,
    template: str,
    values: dict[str, object],
    source_ids: list[str],
) -> InstructRequest:
    """One request about one error: stable id, provenance, and the reply schema for n samples."""
    n = int(values["n"])  # type: ignore[call-overload]
    return InstructRequest(
        id=f"{strategy}:{attempt.id}",
        source_ids=source_ids,
        task=attempt.task,
        strategy=strategy,
        n_requested=n,
        messages=[{"role": "user", "content": render(template, **values)}],
        schema=reply_schema(task, n),
        template=template,
        template_hash=template_hash(template),
    )


class LearningFromErrors(Strategy):
    name = "le"
    description = "learning from errors, one request per wrong answer"
    request_kind = "le"

    def plan(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        errors = [a for a in attempts if not a.correct]
        n = samples_per_error(self.budget, len(errors))
        requests = []
        for attempt in errors:
            task = tasks[attempt.task]
            requests.append(
                error_request(
                    self.name,
                    attempt,
                    task,
                    self.template_for(task),
                    error_values(attempt, n),
                    [attempt.id],
                )
            )
        return requests
