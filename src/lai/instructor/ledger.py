"""What the instructor costs: tokens and money per (stage, iteration, model), and a budget.

A paid endpoint bills per token; one iteration sends thousands of requests. The ledger
adds up the usage each reply reports, prices it with a configurable table
(``{model: {"prompt": $ per 1M tokens, "completion": $ per 1M tokens}}``), persists it as
JSON (atomically, so a kill never leaves half a file) and says when ``max_cost`` is
reached, so the stage can stop starting requests while keeping what it already wrote.
:func:`estimate` prices a run before it starts (a dry run): prompt tokens from the text,
completion tokens bounded by ``max_tokens``, hence an upper bound on the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lai.errors import LaiError
from lai.instructor.base import InstructRequest
from lai.store import atomic_write_json, read_json

log = logging.getLogger(__name__)

PriceTable = Mapping[str, Mapping[str, float]]


class BudgetExceeded(LaiError):
    """The configured ``max_cost`` is reached; records already written are kept."""


def price_for(prices: PriceTable | None, model: str) -> tuple[float, float]:
    """($ per 1M prompt tokens, $ per 1M completion tokens); "*" is the fallback entry."""
    entry = (prices or {}).get(model) or (prices or {}).get("*")
    if not entry:
        return 0.0, 0.0
    return float(entry.get("prompt", 0.0)), float(entry.get("completion", 0.0))


def cost_of(
    prices: PriceTable | None, model: str, prompt_tokens: int, completion_tokens: int
) -> float:
    prompt_price, completion_price = price_for(prices, model)
    return (prompt_tokens * prompt_price + completion_tokens * completion_price) / 1_000_000


@dataclass(frozen=True)
class Estimate:
    requests: int
    prompt_tokens: int
    completion_tokens: int  # upper bound: every reply uses max_tokens
    cost: float  # upper bound in the price table's currency

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
        }


def estimate(
    requests: Iterable[InstructRequest | list[dict[str, str]]],
    max_tokens: int,
    price: Mapping[str, float] | None,
) -> Estimate:
    """Dry-run estimate: prompt tokens ~ chars / 4, completion tokens <= max_tokens each.

    ``price`` is one entry of the price table ({"prompt": ..., "completion": ...}).
    """
    count = prompt = 0
    for request in requests:
        messages = request.messages if isinstance(request, InstructRequest) else request
        prompt += sum(len(str(m.get("content") or "")) for m in messages) // 4
        count += 1
    completion = count * max_tokens
    price = price or {}
    cost = prompt * float(price.get("prompt", 0.0)) + completion * float(
        price.get("completion", 0.0)
    )
    return Estimate(count, prompt, completion, cost / 1_000_000)


class CostLedger:
    """Token and money totals per (stage, iteration, model), optionally persisted as JSON."""

    def __init__(self, prices: PriceTable | None = None, path: Path | None = None) -> None:
        self.prices: dict[str, dict[str, float]] = {k: dict(v) for k, v in (prices or {}).items()}
        self.path = path
        self.entries: dict[tuple[str, int, str], dict[str, float]] = {}
        self._unpriced_warned: set[str] = set()
        if path is not None:
            for row in (read_json(path, default={}) or {}).get("entries", []):
                key = (str(row["stage"]), int(row["iteration"]), str(row["model"]))
                self.entries[key] = {
                    "requests": int(row.get("requests", 0)),
                    "prompt_tokens": int(row.get("prompt_tokens", 0)),
                    "completion_tokens": int(row.get("completion_tokens", 0)),
                    "cost": float(row.get("cost", 0.0)),
                }

    def add(
        self, *, stage: str, iteration: int, model: str, prompt_tokens: int, completion_tokens: int
    ) -> float:
        """Book one reply's usage; return its cost."""
        # Warn only when a price table exists: without one, counting tokens is the point.
        unpriced = self.prices and model not in self.prices and "*" not in self.prices
        if unpriced and model not in self._unpriced_warned:
            self._unpriced_warned.add(model)
            log.warning("no price for model %r: its cost counts as 0", model)
        cost = cost_of(self.prices, model, prompt_tokens, completion_tokens)
        entry = self.entries.setdefault(
            (stage, iteration, model),
            {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0},
        )
        entry["requests"] += 1
        entry["prompt_tokens"] += prompt_tokens
        entry["completion_tokens"] += completion_tokens
        entry["cost"] += cost
        return cost

    def cost(self, stage: str | None = None, iteration: int | None = None) -> float:
        return sum(
            e["cost"]
            for (s, i, _), e in self.entries.items()
            if (stage is None or s == stage) and (iteration is None or i == iteration)
        )

    def tokens(self) -> tuple[int, int]:
        prompt = sum(int(e["prompt_tokens"]) for e in self.entries.values())
        completion = sum(int(e["completion_tokens"]) for e in self.entries.values())
        return prompt, completion

    def as_dict(self) -> dict[str, Any]:
        rows = [
            {"stage": s, "iteration": i, "model": m, **e}
            for (s, i, m), e in sorted(self.entries.items())
        ]
        return {"prices": self.prices, "entries": rows, "total_cost": self.cost()}

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.as_dict())
