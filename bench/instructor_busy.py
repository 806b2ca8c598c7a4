"""Embedded instructor decoding speed, idle and beside one CPU-bound neighbour, before and after.

"before" is how lai started llama.cpp's server until issue 12: ``--n_threads 2`` and the
OpenMP runtime's default (spinning) wait policy. "after" is today's default: the thread
count one less than the CPUs this process may use and a short libgomp spin count
(``GOMP_SPINCOUNT=1000``). "passive" (``OMP_WAIT_POLICY=PASSIVE``, all CPUs) and "all
CPUs, short spins" are the alternatives that were measured against it. Each variant
starts its own server on the embedded SmolLM2-135M Q4_1 GGUF and times ``--requests``
completions of exactly ``--tokens`` tokens (end-of-text is suppressed with a logit bias),
first idle, then with a ``while True: pass`` process running beside it.

    .venv/bin/python bench/instructor_busy.py --out bench/results/instructor_busy.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from lai.config import LocalInstructorConfig
from lai.instructor import local_server
from lai.instructor.local_server import LocalInstructorServer
from lai.processes import GOMP_SPINCOUNT, usable_cpus

PROMPT = "Write a long story about a lighthouse keeper who counts ships. Once upon a time,"


def complete(base_url: str, tokens: int) -> tuple[int, float]:
    body = {
        "model": local_server.ALIAS, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
        "logit_bias": {"0": -100, "1": -100, "2": -100},  # SmolLM2's end-of-text tokens: never stop early
    }  # fmt: skip
    request = urllib.request.Request(
        f"{base_url}/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=1800) as reply:
        usage = json.load(reply)["usage"]
    return int(usage["completion_tokens"]), time.perf_counter() - started


# name -> (n_threads, environment changes); "after" is lai's default today.
VARIANTS: dict[str, tuple[int | None, dict[str, str]]] = {
    "before": (2, {}),  # issue 12's starting point: libgomp's default 300,000 spins
    "passive": (0, {"OMP_WAIT_POLICY": "PASSIVE"}),  # all usable CPUs
    "after": (None, {"GOMP_SPINCOUNT": GOMP_SPINCOUNT}),  # usable CPUs - 1 threads
    "all CPUs, short spins": (0, {"GOMP_SPINCOUNT": GOMP_SPINCOUNT}),
}


def measure(variant: str, busy: bool, requests: int, tokens: int, log_dir: Path) -> dict[str, Any]:
    threads, changes = VARIANTS[variant]
    config = LocalInstructorConfig(enabled=True, n_threads=threads if threads != 0 else usable_cpus())
    original = local_server.server_environment

    def environment(server: str, environ: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in original(server).items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        return {**env, **changes}

    local_server.server_environment = environment  # type: ignore[assignment]
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with LocalInstructorServer(config, log_dir / f"{variant}-{'busy' if busy else 'idle'}.log") as server:
            complete(server.base_url, 8)  # warm-up
            runs = [complete(server.base_url, tokens) for _ in range(requests)]
    finally:
        local_server.server_environment = original
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    produced = sum(n for n, _ in runs)
    seconds = sum(s for _, s in runs)
    return {
        "variant": variant, "neighbour": busy, "n_threads": local_server.server_threads(config),
        "environment": changes, "tokens": produced, "seconds": round(seconds, 2),
        "tokens_per_s": round(produced / seconds, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=2, help="the whole table this many times (the busy case varies)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as logs:
        for round_ in range(args.rounds):
            for busy in (False, True):
                for variant in VARIANTS:
                    row = {"round": round_ + 1, **measure(variant, busy, args.requests, args.tokens, Path(logs))}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    rate: dict[tuple[str, bool], float] = {}
    for r in rows:  # the slowest round of each: what a user can count on
        key = (r["variant"], r["neighbour"])
        rate[key] = min(rate.get(key, float("inf")), r["tokens_per_s"])
    summary = {
        "usable_cpus": usable_cpus(),
        "rows": rows,
        "slowest_round": {f"{v} {'busy' if b else 'idle'}": rate[(v, b)] for v, b in sorted(rate)},
        "busy_over_idle": {v: round(rate[(v, True)] / rate[(v, False)], 3) for v in VARIANTS},
    }
    print(json.dumps(summary["busy_over_idle"]))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
