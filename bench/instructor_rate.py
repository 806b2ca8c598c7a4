"""How close to a server's rate limit does the instruct stage run, and does it lose anything?

Against the fault server (tests/helpers/fault_server.py) with a fixed latency and a
server-side RPM limit, this sends the same requests twice in one run:

* ``lai``: :class:`lai.instructor.async_client.AsyncOpenAIInstructor`, paced by its
  client-side limiter at the server's limit;
* ``baseline``: written like the paper's official code, a ThreadPoolExecutor around a
  synchronous ``openai.OpenAI`` call with unbounded exponential back-off retries and no
  client-side limiter.

It prints one JSON object: per client, the requests, lost requests, 429s received, wall
time, the achieved rate overall and in steady state (successes after the first 2 s and
before the last 1 s, so the server's initial burst does not flatter anyone), each as a
fraction of the limit.

    PYTHONPATH=.:src .venv/bin/python bench/instructor_rate.py --rpm 1200 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

from tests.helpers.fault_server import FaultServer  # noqa: E402

from lai.instructor.async_client import AsyncOpenAIInstructor  # noqa: E402
from lai.instructor.base import InstructRequest  # noqa: E402
from lai.records import InstructRecord  # noqa: E402


def make_requests(count: int) -> list[InstructRequest]:
    return [
        InstructRequest(
            id=f"bench/{i}",
            source_ids=[f"src/{i}"],
            task="gsm8k",
            strategy="le",
            n_requested=1,
            messages=[{"role": "user", "content": f"Write one sample about error {i}."}],
        )  # fmt: skip
        for i in range(count)
    ]


def server_for(args: argparse.Namespace) -> FaultServer:
    return FaultServer(
        latency_s=args.latency_ms / 1000, rpm_limit=args.rpm, burst_s=1.0,
        fault_rate=args.fault_rate, seed=0, hang_s=3.0, keep_bodies=False,
    )  # fmt: skip


def rates(
    server: FaultServer, started: float, ended: float, limit_per_s: float
) -> dict[str, float]:
    times = server.success_times
    window = (started + 2.0, ended - 1.0)
    steady = sum(window[0] <= t < window[1] for t in times) / max(1e-9, window[1] - window[0])
    overall = len(times) / (ended - started)
    return {
        "rate_per_s": round(overall, 2),
        "fraction_of_limit": round(overall / limit_per_s, 3),
        "steady_rate_per_s": round(steady, 2),
        "steady_fraction_of_limit": round(steady / limit_per_s, 3),
    }


def run_lai(args: argparse.Namespace, requests: list[InstructRequest]) -> dict[str, Any]:
    with server_for(args) as server:
        instructor = AsyncOpenAIInstructor(
            base_url=server.base_url, model="teacher", max_tokens=256, timeout_s=2.0,
            concurrency=args.concurrency, max_retries=8, rpm=args.rpm, corrective_retry=False,
        )  # fmt: skip
        records: list[InstructRecord] = []
        started = time.monotonic()
        instructor.run_all(requests, records.append)
        ended = time.monotonic()
        instructor.close()
    ok = {r.id for r in records if r.status == "ok"}
    return {
        "requests": len(requests),
        "ok": len(ok),
        "lost": len(requests) - len(ok),
        "attempts": server.total_received,
        "server_429": server.faulted["rpm"],
        "seconds": round(ended - started, 2),
        **rates(server, started, ended, args.rpm / 60),
    }


def run_baseline(args: argparse.Namespace, requests: list[InstructRequest]) -> dict[str, Any]:
    with server_for(args) as server:
        client = openai.OpenAI(
            base_url=server.base_url, api_key="not-needed", timeout=2.0, max_retries=0
        )

        def call(request: InstructRequest) -> str | None:
            delay = 1.0
            while True:  # like the paper's code: retry forever, doubling the wait
                try:
                    response = client.chat.completions.create(
                        model="teacher", messages=request.messages, max_tokens=256,  # type: ignore[arg-type]
                        extra_headers={"X-Client-Request-Id": request.id},
                    )  # fmt: skip
                    return response.choices[0].message.content
                except Exception:  # noqa: BLE001 - the baseline retries on anything
                    time.sleep(delay)
                    delay *= 2

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            replies = list(pool.map(call, requests))
        ended = time.monotonic()
        client.close()
    ok = sum(reply is not None for reply in replies)
    return {
        "requests": len(requests),
        "ok": ok,
        "lost": len(requests) - ok,
        "attempts": server.total_received,
        "server_429": server.faulted["rpm"],
        "seconds": round(ended - started, 2),
        **rates(server, started, ended, args.rpm / 60),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=float, default=1200.0, help="the server's limit")
    parser.add_argument("--seconds", type=float, default=15.0, help="work for about this long")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    requests = make_requests(int(args.rpm / 60 * args.seconds))
    result = {
        "limit_rpm": args.rpm,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "fault_rate": args.fault_rate,
        "lai": run_lai(args, requests),
        "baseline": run_baseline(args, requests),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
