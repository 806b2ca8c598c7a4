"""What the instructor costs: tokens and money per (stage, iteration, model), and a budget.

A paid endpoint bills per token; one iteration sends thousands of requests. The ledger
adds up the usage each reply reports and prices it with a configurable table
(``{model: {"prompt": $ per 1M tokens, "completion": $ per 1M tokens}}``).

Its record of truth is an append-only spend log (``spend.jsonl`` in the run directory):
one line per paid HTTP reply, fsynced the moment the reply arrives, holding the reply
itself and its cache key. Totals are derived from that log, so a kill -9 at any moment
loses no spend, and ``max_cost`` holds across any number of kills and resumes. The
line is written before the reply enters the request cache; a kill between the two
leaves the reply in the log, from which :meth:`CostLedger.unfiled` hands it back to the
cache on the next start (so it is neither paid nor booked twice). ``ledger.json`` is a
summary rewritten from the totals for people and reports, never read back when a spend
log exists.

:func:`estimate` prices a run before it starts (a dry run): prompt tokens from the text,
completion tokens bounded by ``max_tokens``, hence an upper bound on the cost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lai.errors import LaiError
from lai.instructor.base import InstructRequest
from lai.store import atomic_write_json, read_json, repair_jsonl

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
    calls: int = -1  # paid HTTP replies at most (a corrective retry is a second one); -1: = requests

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "calls": self.requests if self.calls < 0 else self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
        }

    def __add__(self, other: Estimate) -> Estimate:
        calls = self.as_dict()["calls"] + other.as_dict()["calls"]
        return Estimate(
            self.requests + other.requests, self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens, self.cost + other.cost, calls,
        )  # fmt: skip


#: Prompt tokens the corrective message adds (its text over 4, rounded up generously).
CORRECTIVE_TOKENS = 64


def estimate(
    requests: Iterable[InstructRequest | list[dict[str, str]]],
    max_tokens: int,
    price: Mapping[str, float] | None,
    *,
    corrective: bool = False,
    repeat: int = 1,
) -> Estimate:
    """Dry-run bound: prompt tokens ~ chars / 4, completion tokens <= max_tokens each.

    ``price`` is one entry of the price table ({"prompt": ..., "completion": ...}).
    ``corrective``: each request may be asked once more (the client's corrective retry),
    with its first reply (<= max_tokens) and the corrective message added to the prompt.
    ``repeat``: each item stands for this many identical calls (re-solving asks n times),
    counted by multiplication rather than by a list of copies, so a budget of 10^6 prices
    in a moment.
    """
    count = prompt = 0
    for request in requests:
        messages = request.messages if isinstance(request, InstructRequest) else request
        prompt += sum(len(str(m.get("content") or "")) for m in messages) // 4
        count += 1
    count, prompt = count * repeat, prompt * repeat
    calls, completion = count, count * max_tokens
    if corrective:
        calls += count
        prompt += prompt + count * (max_tokens + CORRECTIVE_TOKENS)
        completion += count * max_tokens
    price = price or {}
    cost = prompt * float(price.get("prompt", 0.0)) + completion * float(
        price.get("completion", 0.0)
    )
    return Estimate(count, prompt, completion, cost / 1_000_000, calls)


class CostLedger:
    """Token and money totals per (stage, iteration, model), derived from a spend log.

    ``spend_path``: the append-only log (one fsynced line per paid reply); totals are
    rebuilt from it on start. ``path``: a JSON summary rewritten by :meth:`save` (and read
    as the starting totals only when there is no spend log: runs made before it existed).
    """

    def __init__(
        self, prices: PriceTable | None = None, path: Path | None = None, spend_path: Path | None = None
    ) -> None:
        self.prices: dict[str, dict[str, float]] = {k: dict(v) for k, v in (prices or {}).items()}
        self.path = path
        self.spend_path = spend_path
        self.entries: dict[tuple[str, int, str], dict[str, float]] = {}
        self._unpriced_warned: set[str] = set()
        self._log: Any = None
        if spend_path is not None and spend_path.exists():
            for row in read_spend(spend_path):
                self._count(row["stage"], int(row["iteration"]), row["model"],
                            int(row["prompt_tokens"]), int(row["completion_tokens"]), float(row["cost"]))  # fmt: skip
        elif path is not None:
            for row in (read_json(path, default={}) or {}).get("entries", []):
                key = (str(row["stage"]), int(row["iteration"]), str(row["model"]))
                self.entries[key] = {
                    "requests": int(row.get("requests", 0)),
                    "prompt_tokens": int(row.get("prompt_tokens", 0)),
                    "completion_tokens": int(row.get("completion_tokens", 0)),
                    "cost": float(row.get("cost", 0.0)),
                }

    def _count(self, stage: str, iteration: int, model: str, prompt: int, completion: int, cost: float) -> None:
        entry = self.entries.setdefault(
            (stage, iteration, model),
            {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0},
        )
        entry["requests"] += 1
        entry["prompt_tokens"] += prompt
        entry["completion_tokens"] += completion
        entry["cost"] += cost

    def add(
        self,
        *,
        stage: str,
        iteration: int,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        call: Mapping[str, Any] | None = None,
    ) -> float:
        """Book one paid reply's usage, durably when there is a spend log; return its cost.

        ``call`` (request id, cache key, the reply...) goes into the log line, so the
        reply itself is on disk the moment it is booked.
        """
        # Warn only when a price table exists: without one, counting tokens is the point.
        unpriced = self.prices and model not in self.prices and "*" not in self.prices
        if unpriced and model not in self._unpriced_warned:
            self._unpriced_warned.add(model)
            log.warning("no price for model %r: its cost counts as 0", model)
        cost = cost_of(self.prices, model, prompt_tokens, completion_tokens)
        if self.spend_path is not None:
            row = {
                "time": round(time.time(), 3), "stage": stage, "iteration": iteration, "model": model,
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cost": cost,
                **(call or {}),
            }  # fmt: skip
            self._append(row)
        self._count(stage, iteration, model, prompt_tokens, completion_tokens, cost)
        return cost

    def _append(self, row: dict[str, Any]) -> None:
        if self._log is None:
            assert self.spend_path is not None
            self.spend_path.parent.mkdir(parents=True, exist_ok=True)
            repair_jsonl(self.spend_path)
            self._log = open(self.spend_path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        # One write of one whole line, then fsync: a kill leaves at most a torn tail.
        self._log.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    def unfiled(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(cache key, call) of every logged reply, for the cache to take back what it lacks."""
        if self.spend_path is None or not self.spend_path.exists():
            return
        for row in read_spend(self.spend_path):
            if row.get("key") and "reply" in row:
                yield row["key"], {k: row.get(k) for k in CALL_FIELDS}

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

    def close(self) -> None:
        self.save()
        if self._log is not None:
            self._log.close()
            self._log = None


#: What the spend log keeps of one HTTP reply, enough to answer the same call again.
CALL_FIELDS = ("reply", "finish_reason", "model", "prompt_tokens", "completion_tokens")


def read_spend(path: Path) -> Iterator[dict[str, Any]]:
    """The spend log's lines, one at a time (a torn last line from a kill is cut first)."""
    repair_jsonl(path)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def spend_totals(path: Path) -> dict[tuple[int, str], dict[str, float]]:
    """What the spend log says was paid, per (iteration, stage): calls, tokens, cost.

    Read only (a report may read a run another process is writing): a torn last line
    is skipped, never repaired here.
    """
    totals: dict[tuple[int, str], dict[str, float]] = {}
    if not path.is_file():
        return totals
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the torn tail of a killed write
            if not isinstance(row, dict):
                continue
            key = (int(row.get("iteration") or 0), str(row.get("stage") or "?"))
            entry = totals.setdefault(key, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0})
            entry["calls"] += 1
            for field in ("prompt_tokens", "completion_tokens", "cost"):
                value = row.get(field)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    entry[field] += value
    return totals
