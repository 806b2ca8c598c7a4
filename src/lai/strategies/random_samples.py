"""Random: the instructor imitates randomly chosen training samples, not errors.

A baseline for LE. It keeps everything else equal: the same number of requests as there
are errors, the same ``n = ceil(budget / #errors) + 1`` samples per request, the same
instructor and reply format. Only the input changes: each request shows one attempt drawn
at random from all the attempts, right or wrong alike, with its reference answer (never
the target's response or its verdict), and asks for similar new samples. If LE beats this
baseline, it is the errors that help, not just more instructor-written data.

Deterministic: the attempts are sorted by id and drawn with a generator seeded by the
run's seed and the iteration. Request ids are ``random:<attempt id>``.
"""

from __future__ import annotations

from lai.instructor.base import InstructRequest
from lai.records import Attempt
from lai.strategies.base import Strategy
from lai.strategies.le import error_request, samples_per_error
from lai.strategies.rows import seeded_rng
from lai.tasks.base import Task


def draw_attempts(attempts: list[Attempt], count: int, seed: int, iteration: int) -> list[Attempt]:
    """``count`` distinct attempts drawn uniformly, in draw order, the same for any input order."""
    pool = sorted(attempts, key=lambda a: a.id)
    return seeded_rng(seed, iteration, "random").sample(pool, min(count, len(pool)))


class RandomSamples(Strategy):
    name = "random"
    description = (
        "a baseline: the instructor imitates randomly drawn training questions, right or "
        "wrong alike, instead of errors"
    )
    request_kind = "random"

    def plan(self, attempts: list[Attempt], tasks: dict[str, Task]) -> list[InstructRequest]:
        errors = sum(1 for a in attempts if not a.correct)
        n = samples_per_error(self.budget, errors)
        requests = []
        for attempt in draw_attempts(attempts, errors, self.seed, self.iteration):
            task = tasks[attempt.task]
            # The reference answer, not the response: the sample is shown as a model to
            # imitate, with no hint of whether the target got it right.
            values = {"question": attempt.question, "reference": attempt.reference, "n": n}
            requests.append(
                error_request(
                    self.name, attempt, task, self.template_for(task), values, [attempt.id]
                )
            )
        return requests
