"""`lai run --dry-run`'s bill: what iteration 1 would cost the instructor, before any
request is sent. A bound, not a guess: every reply at ``max_tokens``, and every request
(re-solves included) answered twice when the corrective retry is on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lai.config import RunConfig
from lai.instructor import InstructRequest
from lai.instructor.ledger import estimate, price_for
from lai.instructor.prompts import render
from lai.tasks.base import Task


def estimate_bill(
    config: RunConfig,
    requests: list[InstructRequest],
    task: Callable[[str], Task],
    questions: dict[str, str],
    prices: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The instruct stage's requests plus verify's re-solving, as counts, tokens and cost.

    ``questions`` maps a collected attempt's id to its question: a generated question is
    about as long as the question it came from, so each source question stands in for its
    samples' re-solve prompts (counted, not listed: a budget may be 10^6 samples).
    """
    cfg = config.instructor
    prompt, completion = price_for(prices, cfg.model)
    price = {"prompt": prompt, "completion": completion}
    corrective = cfg.corrective_retry and cfg.backend == "openai"  # the fakes never ask twice
    bill = estimate(requests, cfg.max_tokens, price, corrective=corrective)
    check = config.verify.resolve
    verify_bill = estimate([], check.max_tokens, price)
    if check.enabled:
        for request in requests:
            rule = task(request.task).resolve_rule
            if rule is not None:
                content = render(rule.template, question=questions.get(request.source_ids[0], ""))
                verify_bill += estimate(
                    [[{"role": "user", "content": content}]], check.max_tokens, price,
                    corrective=corrective, repeat=request.n_requested * check.n,
                )  # fmt: skip
    total = {
        key: bill.as_dict()[key] + verify_bill.as_dict()[key]
        for key in ("requests", "calls", "prompt_tokens", "completion_tokens", "cost")
    }
    return {"instructor": cfg.model, **total, "instruct": bill.as_dict(), "verify": verify_bill.as_dict()}
