"""The asyncio instructor against a real faulty HTTP server on 127.0.0.1.

Covers what a paid, rate-limited endpoint does to a stage: faults (every request still
ends with exactly one record), Retry-After, the persistent cache (nothing is sent twice,
even after a kill -9), client-side pacing, the budget, the dry-run estimate and the
corrective retry for replies without samples.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from lai.instructor.async_client import CORRECTIVE_MESSAGE, AsyncOpenAIInstructor
from lai.instructor.base import InstructRequest
from lai.instructor.ledger import BudgetExceeded, CostLedger, estimate
from lai.instructor.rate_limit import RateLimiter
from lai.instructor.request_cache import RequestCache
from lai.records import InstructRecord
from lai.store import JsonlWriter, read_json, read_records
from tests.helpers.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {"samples": {"type": "array"}}}


def request(i: int) -> InstructRequest:
    return InstructRequest(
        id=f"le:gsm8k/train/{i}", source_ids=[f"gsm8k/train/{i}"], task="gsm8k", strategy="le",
        n_requested=1, messages=[{"role": "user", "content": f"help with error {i}"}],
        schema=SCHEMA,
    )  # fmt: skip


def client(server: FaultServer, **kw: Any) -> AsyncOpenAIInstructor:
    settings: dict[str, Any] = {
        "base_url": server.base_url, "model": "teacher", "timeout_s": 0.5, "max_retries": 6,
        "backoff_base_s": 0.02, "backoff_max_s": 0.3, "concurrency": 16, "jitter_seed": 0,
    } | kw  # fmt: skip
    return AsyncOpenAIInstructor(**settings)


def run(instructor: AsyncOpenAIInstructor, requests: list[InstructRequest]) -> list[InstructRecord]:
    records: list[InstructRecord] = []
    instructor.run_all(requests, records.append)
    return records


def test_faulty_endpoint_every_request_accounted_for_exactly_once() -> None:
    requests = [request(i) for i in range(200)]
    with FaultServer(fault_rate=0.3, seed=1, retry_after_s=0.1, hang_s=0.8) as server:
        records = run(client(server), requests)
    ids = Counter(r.id for r in records)
    assert set(ids) == {r.id for r in requests} and set(ids.values()) == {1}
    assert all(r.status == "ok" or (r.status == "failed" and r.error) for r in records)
    assert sum(server.faulted.values()) > 40  # the faults did happen
    assert {"429", "500", "503", "timeout", "close", "malformed", "empty"} <= set(server.faulted)
    # Every request the server answered well is an ok record (none lost after success).
    ok = {r.id for r in records if r.status == "ok"}
    assert ok >= {i for i, n in server.succeeded.items() if n}
    truncated = [r for r in records if r.finish_reason == "length"]
    assert truncated and all(r.status == "ok" for r in truncated)  # kept as is


def test_failures_after_retries_become_failed_records() -> None:
    plan = {request(0).id: ["503"] * 3, request(1).id: ["close"] * 3}
    with FaultServer(plan=plan) as server:
        records = {r.id: r for r in run(client(server, max_retries=2), [request(0), request(1)])}
    assert records[request(0).id].status == "failed"
    assert records[request(0).id].error.startswith("HTTP 503")
    assert "connection lost" in records[request(1).id].error
    assert server.received[request(0).id] == 3  # one try + max_retries


def test_retry_after_is_obeyed() -> None:
    rid = request(0).id
    with FaultServer(plan={rid: ["429"]}, retry_after_s=0.5) as server:
        # A tiny back-off (at most backoff_max_s, 0.3 s): only the header can explain a 0.5 s wait.
        [record] = run(client(server, backoff_base_s=0.001), [request(0)])
    assert record.status == "ok"
    first, second = server.arrivals[rid]
    assert second - first >= 0.5


def test_a_long_wait_for_the_server_is_said(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from lai.instructor import async_client

    monkeypatch.setattr(async_client, "LONG_WAIT_S", 0.4)  # the real threshold is 10 s
    rid = request(0).id
    with FaultServer(plan={rid: ["429"]}, retry_after_s=0.5) as server, caplog.at_level("WARNING", "lai"):
        [record] = run(client(server, backoff_base_s=0.001), [request(0)])
    assert record.status == "ok"
    assert any("retry 1 in 0.5 s (the server's Retry-After)" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_cache_second_run_sends_nothing(tmp_path: Path) -> None:
    requests = [request(i) for i in range(20)]
    with FaultServer(fault_rate=0.2, seed=3, retry_after_s=0.05, hang_s=0.8) as server:
        first = client(server, cache_path=tmp_path / "cache.sqlite")
        records = run(first, requests)
        first.close()
        sent = server.total_received
        second = client(server, cache_path=tmp_path / "cache.sqlite")
        again = run(second, requests)
        second.close()
        assert server.total_received == sent
    by_id = {r.id: r for r in records}
    assert {r.id: r for r in again} == by_id
    # The API key is never stored.
    os.environ["LAI_TEST_KEY"] = "sk-secret-value"
    try:
        keyed = client(server, cache_path=tmp_path / "cache.sqlite", api_key_env="LAI_TEST_KEY")
        keyed.close()
    finally:
        del os.environ["LAI_TEST_KEY"]
    assert b"sk-secret-value" not in (tmp_path / "cache.sqlite").read_bytes()


def test_cache_key_covers_sampling_and_sample_index() -> None:
    base = {"base_url": "http://x/v1", "model": "m", "messages": [{"role": "user", "content": "a"}]}
    keys = {
        RequestCache.key(**base),
        RequestCache.key(**base, temperature=0.5),
        RequestCache.key(**base, seed=1),
        RequestCache.key(**base, max_tokens=9),
        RequestCache.key(**base, response_format={"type": "json_object"}),
        RequestCache.key(**base, sample_index=1),
        RequestCache.key(**(base | {"model": "n"})),
    }
    assert len(keys) == 7 and RequestCache.key(**base) == RequestCache.key(**base)


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lai.instructor.async_client import AsyncOpenAIInstructor
    from lai.store import JsonlWriter
    from tests.unit.test_async_instructor import request
    base_url, tmp = sys.argv[1], Path(sys.argv[2])
    instructor = AsyncOpenAIInstructor(
        base_url=base_url, model="teacher", timeout_s=2, concurrency=4,
        cache_path=tmp / "cache.sqlite",
    )
    with JsonlWriter(tmp / "instruct.jsonl") as writer:
        instructor.run_all([request(i) for i in range(100)], lambda r: writer.write([r]))
    """
)


def test_kill_in_the_middle_and_rerun_sends_no_cached_request_again(tmp_path: Path) -> None:
    requests = [request(i) for i in range(100)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
    with FaultServer(latency_s=0.03) as server:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.base_url, str(tmp_path)], cwd=REPO, env=env
        )
        try:
            deadline = time.monotonic() + 30
            while sum(server.succeeded.values()) < 30 and time.monotonic() < deadline:
                assert child.poll() is None, "the child ended before it was killed"
                time.sleep(0.02)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        instructor = client(server, cache_path=tmp_path / "cache.sqlite")
        cached_keys = instructor.cache.keys()  # type: ignore[union-attr]
        cached = {r.id for r in requests if instructor.cache_key(r) in cached_keys}
        assert 20 <= len(cached) < 100  # at most 4 were in flight at the kill
        before = Counter(server.received)
        out = tmp_path / "instruct.jsonl"
        done = {r.id for r in read_records(out, InstructRecord)}  # repairs a torn last line
        with JsonlWriter(out) as writer:
            run_rest = [r for r in requests if r.id not in done]
            instructor.run_all(run_rest, lambda r: writer.write([r]))
        instructor.close()
        after = Counter(server.received)
    assert all(after[i] == before[i] for i in cached)  # nothing cached was sent again
    final = Counter(r.id for r in read_records(out, InstructRecord))
    assert set(final) == {r.id for r in requests} and set(final.values()) == {1}


def test_rate_limiter_keeps_the_configured_rpm() -> None:
    rate = 30  # per second: 30 refills in 1 s, as many as 3 s at 10 per second
    seconds = 1.0

    async def count_for() -> int:
        limiter = RateLimiter(rpm=rate * 60)  # a burst of 1 s: `rate` at once
        started, count = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            await limiter.acquire()
            count += 1
        return count

    count = asyncio.run(count_for())
    assert rate * seconds - 2 <= count <= rate * seconds + rate + 2  # the limit, plus the initial 1 s burst


def test_rate_limiter_tokens_per_minute_with_correction() -> None:
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    async def scenario() -> tuple[float, float]:
        limiter = RateLimiter(tpm=6000, clock=lambda: now[0], sleep=fake_sleep)  # 100 tok/s
        await limiter.acquire(100)  # empties the 1 s bucket
        limiter.settle(100, 20)  # the reply used 20: 80 come back
        await limiter.acquire(80)  # no wait
        waited_before = now[0]
        await limiter.acquire(50)  # needs 0.5 s of refill
        return waited_before, now[0]

    before, after = asyncio.run(scenario())
    assert before == 0.0 and after == pytest.approx(0.5)


def test_max_cost_stops_cleanly_and_keeps_what_was_written(tmp_path: Path) -> None:
    # Each request: ~5 prompt tokens + ~20 completion tokens at $1M per 1M = ~$25.
    prices = {"teacher": {"prompt": 1_000_000.0, "completion": 1_000_000.0}}
    ledger = CostLedger(prices, path=tmp_path / "ledger.json")
    requests = [request(i) for i in range(30)]
    out = tmp_path / "instruct.jsonl"
    with FaultServer() as server:
        instructor = client(server, ledger=ledger, max_tokens=30, concurrency=2)
        with JsonlWriter(out) as writer, pytest.raises(BudgetExceeded):
            asyncio.run(instructor.run(requests, lambda r: writer.write([r]), max_cost=300.0))
        sent = server.total_received
    written = read_records(out, InstructRecord)
    assert 0 < len(written) < 30 and len(written) == sent
    assert all(r.status == "ok" for r in written)
    assert ledger.cost() <= 300.0
    saved = read_json(tmp_path / "ledger.json")
    assert saved["total_cost"] == pytest.approx(ledger.cost())
    [entry] = saved["entries"]
    assert (entry["stage"], entry["model"], entry["requests"]) == ("instruct", "teacher", sent)
    assert entry["prompt_tokens"] == sum(r.prompt_tokens for r in written)


def test_dry_run_estimate() -> None:
    requests = [request(i) for i in range(10)]  # "help with error i": 18 chars -> 4 tokens
    result = estimate(requests, max_tokens=100, price={"prompt": 2.0, "completion": 8.0})
    assert (result.requests, result.prompt_tokens, result.completion_tokens) == (10, 40, 1000)
    assert result.cost == pytest.approx((40 * 2.0 + 1000 * 8.0) / 1e6)
    assert json.loads(json.dumps(result.as_dict()))["requests"] == 10


def test_reply_without_samples_gets_one_corrective_retry() -> None:
    good = json.dumps(
        {"diagnosis": "d", "samples": [{"question": "q", "solution": "s", "answer": "1"}]}
    )

    def reply(request_id: str, body: dict[str, Any], attempt: int) -> str:
        if request_id == request(1).id:
            return "Sorry, I cannot help."  # never recovers
        return "Sure! Here is my analysis in prose." if attempt == 0 else good

    with FaultServer(reply_fn=reply) as server:
        records = {r.id: r for r in run(client(server), [request(0), request(1)])}
    fixed, hopeless = records[request(0).id], records[request(1).id]
    assert fixed.status == "ok" and fixed.reply == good
    assert fixed.messages == request(0).messages  # the record keeps the original request
    second = [body for rid, body in server.bodies if rid == request(0).id][1]
    assert second["messages"][-2] == {
        "role": "assistant",
        "content": "Sure! Here is my analysis in prose.",
    }
    assert second["messages"][-1] == {"role": "user", "content": CORRECTIVE_MESSAGE}
    # Still nothing after the corrective retry: returned as is, no third request.
    assert hopeless.status == "ok" and hopeless.reply == "Sorry, I cannot help."
    assert server.received[request(1).id] == 2


def test_truncated_reply_is_kept_without_corrective_retry() -> None:
    rid = request(0).id
    with FaultServer(plan={rid: ["length"]}) as server:
        [record] = run(client(server), [request(0)])
    assert record.finish_reason == "length" and server.received[rid] == 1


def test_client_error_is_not_retried() -> None:
    with FaultServer(plan={request(0).id: ["400"]}) as server:
        [record] = run(client(server), [request(0)])
    assert record.status == "failed" and record.error.startswith("HTTP 400")
    assert server.received[request(0).id] == 1
