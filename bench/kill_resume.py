"""Kill, resume, budget and memory: what a run left alone overnight survives.

    .venv/bin/python bench/kill_resume.py [--kills 16] [--out bench/results/kill_resume.json]

1. kill -9 at random moments (a random number, 1-30, of served replies apart) over a
   200-request instruct stage (concurrency 4, 30 % faults, one request in three first
   answered in prose, hence a corrective retry), until it finishes; counted from the
   fault server's log (tests/helpers/kill_resume.py): replies served, replies lai had
   received, replies paid twice after having been received, calls sent again because
   their reply was on the wire at a kill.
2. the same with ``max_cost``: what lai booked, and what the server billed, against the cap.
3. ``lai run`` on fakes with ``strategy.budget`` 10^3 and 10^6: peak RSS of the process.
4. ``lai run --dry-run`` with a budget of 10^6: wall time and the bound.
5. SIGTERM in every stage of a slowed fake run: seconds until the process has exited.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

import yaml  # noqa: E402
from tests.helpers.kill_resume import kill_and_resume  # noqa: E402

DATA = REPO.parent / "shared" / "data"
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}


def fake_config(**changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "bench", "seed": 3, "data_dir": str(DATA),
        "target": {"backend": "scripted", "model": "m", "batch_size": 2},
        "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 12}]},
        "instructor": {"backend": "scripted", "model": "teacher", "concurrency": 2},
        "strategy": {"name": "le", "budget": 12, "embedder": "hashing"},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [{"task": "gsm8k", "pool": "test", "limit": 4}], "baseline": False},
    }  # fmt: skip
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def lai_run(cfg: dict[str, Any], run_dir: Path, *extra: str) -> subprocess.Popen[str]:
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen(
        [sys.executable, "-m", "lai.cli", "run", str(path), "--run-dir", str(run_dir), *extra],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def peak_rss_mb(process: subprocess.Popen[str]) -> tuple[int, float, str]:
    """Wait for the process; (exit status, its peak RSS in MB, stderr's tail)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read() if process.stderr else ""
    return process.returncode, usage.ru_maxrss / 1024, err[-500:]


def memory(tmp: Path) -> dict[str, Any]:
    out = {}
    for budget in (1_000, 1_000_000):
        started = time.monotonic()
        code, rss, err = peak_rss_mb(lai_run(fake_config(strategy={"budget": budget}), tmp / f"mem-{budget}"))
        out[str(budget)] = {"exit": code, "peak_rss_mb": round(rss, 1), "seconds": round(time.monotonic() - started, 1)}
        if code:
            out[str(budget)]["stderr"] = err
    return out


def dry_run(tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    process = lai_run(fake_config(strategy={"budget": 1_000_000}), tmp / "dry", "--dry-run")
    _, err = process.communicate(timeout=600)
    return {"exit": process.returncode, "seconds": round(time.monotonic() - started, 2), "line": " ".join(err.split())[-400:]}


STAGES = ("collect", "instruct", "verify", "evaluate", "retest")


def sigterm_latency(tmp: Path) -> dict[str, Any]:
    slow = fake_config(
        target={"options": {"delay_s": 0.5}}, instructor={"options": {"delay_s": 1.0}},
        verify={"resolve": {"enabled": True}},
    )  # fmt: skip
    out = {}
    for stage in STAGES:
        run_dir = tmp / f"term-{stage}"
        process = lai_run(slow, run_dir)
        key, deadline = f"iter_01/{stage}", time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = json.loads((run_dir / "manifest.json").read_text())["stages"].get(key, {}).get("status")
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                status = None
            if status == "running":
                break
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the stage
        sent = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        out[stage] = {"exit": process.returncode, "seconds": round(time.monotonic() - sent, 2),
                      "said_interrupted": "interrupted: rerun the same command to resume" in err}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--cap", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "kill_resume.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"kill_resume": [], "budget": []}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for seed in args.seeds:
            (tmp / f"k{seed}").mkdir()
            outcome = kill_and_resume(tmp / f"k{seed}", n=200, concurrency=4, kills=args.kills, seed=seed)
            results["kill_resume"].append({"seed": seed, **outcome.as_dict()})
            print("kill/resume", results["kill_resume"][-1], flush=True)
            (tmp / f"b{seed}").mkdir()
            outcome = kill_and_resume(tmp / f"b{seed}", n=200, concurrency=4, kills=args.kills // 2, seed=seed,
                                      max_cost=args.cap, max_gap=12)  # fmt: skip
            results["budget"].append({"seed": seed, "cap": args.cap, **outcome.as_dict()})
            print("budget", results["budget"][-1], flush=True)
        results["memory"] = memory(tmp)
        print("memory", results["memory"], flush=True)
        results["dry_run_1e6"] = dry_run(tmp)
        print("dry run", results["dry_run_1e6"], flush=True)
        results["sigterm"] = sigterm_latency(tmp)
        print("sigterm", results["sigterm"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
