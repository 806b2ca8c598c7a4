"""Sandbox speed: per-program overhead over a bare interpreter, and run_many throughput.

Why: scoring MBPP/HumanEval and verifying generated code runs thousands of tiny
programs; the sandbox's fixed cost per program, not the programs, sets the pace.

    .venv/bin/python bench/sandbox_overhead.py                 # lai.sandbox as installed
    .venv/bin/python bench/sandbox_overhead.py --module PATH   # another copy (e.g. the old one)
    .venv/bin/python bench/sandbox_overhead.py --busy          # beside a CPU-bound neighbour

Per-program overhead = median wall time of ``run_program("pass")`` minus the median of
``python -I -S -B -c pass`` started with ``subprocess`` (the same interpreter and flags,
what the sandbox replaced); throughput = trivial programs per second through
``run_many`` with its default workers (one per CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any


def load(path: str | None) -> ModuleType:
    """lai.sandbox, or a module loaded from a file (to measure an older copy side by side)."""
    if path is None:
        from lai import sandbox

        return sandbox
    spec = importlib.util.spec_from_file_location("sandbox_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def neighbour(busy: bool) -> Iterator[None]:
    """A CPU-bound process beside the measurement, as on a shared machine."""
    if not busy:
        yield
        return
    process = multiprocessing.get_context("fork").Process(target=_spin, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.kill()
        process.join()


def median_ms(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", help="path of a sandbox module to measure instead")
    parser.add_argument("--runs", type=int, default=40, help="single programs to time")
    parser.add_argument("--many", type=int, default=200, help="programs given to run_many")
    parser.add_argument("--busy", action="store_true", help="run beside a CPU-bound process")
    args = parser.parse_args()
    sandbox = load(args.module)
    python = os.path.realpath(sys.executable)
    with neighbour(args.busy):
        isolated = sandbox.isolation_available()
        result = sandbox.run_program("pass")
        assert result.passed, result.reason
        bare = median_ms(
            lambda: subprocess.run([python, "-I", "-S", "-B", "-c", "pass"], check=True), args.runs
        )
        one = median_ms(lambda: sandbox.run_program("pass"), args.runs)
        start = time.perf_counter()
        results = sandbox.run_many(["pass"] * args.many)
        rate = args.many / (time.perf_counter() - start)
        assert all(r.passed for r in results), {r.reason for r in results}
    print(json.dumps({
        "isolated": isolated, "busy_neighbour": args.busy, "cpus": os.cpu_count(),
        "bare_interpreter_ms": round(bare, 1), "run_program_ms": round(one, 1),
        "overhead_ms": round(one - bare, 1), "run_many_programs_per_s": round(rate, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
