"""torch on a busy machine: OpenMP wait policies, idle and beside one CPU-bound neighbour.

A loop of small matrix products (the shapes of SmolLM2-135M's hidden layers, batch 16)
on 2 torch threads, each policy in a fresh process (libgomp reads it once, at load):
libgomp's default (300,000 spins before a thread sleeps), ``OMP_WAIT_POLICY=PASSIVE``, and
lai's default ``GOMP_SPINCOUNT=1000``. Then the same with a ``while True: pass`` process
running beside it.

    .venv/bin/python bench/openmp_torch.py --out bench/results/openmp_torch.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

LOOP = """
import time, torch
torch.manual_seed(0)
torch.set_num_threads(2)
w = [torch.randn(576, 1536) for _ in range(30)]
x = torch.randn(16, 576)
def step():
    h = x
    for m in w:
        h = torch.tanh(h @ m)[:, :576]
for _ in range(20):
    step()
t = time.perf_counter()
for _ in range({steps}):
    step()
print(time.perf_counter() - t)
"""
POLICIES = {"libgomp default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "GOMP_SPINCOUNT=1000 (lai)": {"GOMP_SPINCOUNT": "1000"}}


def seconds(policy: dict[str, str], steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", LOOP.format(steps=steps)], env={**env, **policy}, capture_output=True, text=True, check=True)
    return round(float(out.stdout), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for busy in (False, True):
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for name, policy in POLICIES.items():
                row = {"policy": name, "neighbour": busy, "seconds": seconds(policy, args.steps)}
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    if args.out:
        args.out.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
