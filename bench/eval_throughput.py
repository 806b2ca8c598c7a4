"""`lai eval` throughput with the transformers backend, before and after token-budget batching.

"Before" is the backend as it was at commit ed408bc (the last commit to touch
src/lai/targets/hf.py and greedy.py before this work): both files are read with
``git show REV:path`` into a temporary module, registered as the target backend
``hf-before``, and run through the very same ``lai.eval_command.evaluate_model`` as the
current backend ("after", ``hf``). Same model (the embedded SmolLM2-135M-Instruct, fp32),
same rows, same process, one after the other for each task; with ``--repeats 2`` the
second round runs "after" first, so neither side always gets the warmer machine.

Tasks (``lai eval`` defaults otherwise, batch size 16):
- gsm8k, paper protocol (chat prompt, greedy generation, ``--max-new-tokens``), test rows;
- arc_challenge, lm-eval protocol (log-likelihood of each option), the local test sample;
- mmlu, lm-eval protocol (log-likelihood of " A".." D", zero-shot), the local train pool;
- only with ``--tasks gsm8k_lm_eval``: gsm8k under lm-eval's gsm8k_cot (8-shot, stop strings).

Reported per task and side: seconds answering (the summary's per-task seconds, model load
excluded), items/s, whole-call wall and CPU seconds (load included; CPU time is the steadier
measure when other jobs share the machine), and the per-item agreement of the
two sides (same extracted answer; for generation also the same text; for log-likelihood
the largest difference between the printed log-likelihoods).

    .venv/bin/python bench/eval_throughput.py                      # writes bench/results/eval_throughput.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lai.data import default_data_dir  # noqa: E402
from lai.eval_command import evaluate_model  # noqa: E402
from lai.targets import TARGETS  # noqa: E402

BEFORE_REV = "ed408bc"
MODEL = "embedded:smollm2-135m-instruct"
# label: (task, protocol, pool, default limit); the last is not run by default (--tasks).
TASKS = {
    "gsm8k": ("gsm8k", "paper", "test", 40),
    "arc_challenge": ("arc_challenge", "lm-eval", "test", 30),
    "mmlu": ("mmlu", "lm-eval", "train", 40),
    "gsm8k_lm_eval": ("gsm8k", "lm-eval", "test", 40),  # 8-shot, stop strings "Q:" etc.
}
DEFAULT_TASKS = "gsm8k,arc_challenge,mmlu"


def install_before(rev: str) -> str:
    """Write the backend at ``rev`` into a temp module and register it as ``hf-before``."""
    folder = Path(tempfile.mkdtemp(prefix="lai-before-"))
    show = lambda path: subprocess.check_output(["git", "show", f"{rev}:{path}"], cwd=REPO, text=True)  # noqa: E731
    (folder / "lai_before_greedy.py").write_text(show("src/lai/targets/greedy.py"))
    hf = show("src/lai/targets/hf.py").replace("from lai.targets.greedy import", "from lai_before_greedy import")
    (folder / "lai_before_hf.py").write_text(hf)
    sys.path.insert(0, str(folder))
    TARGETS.register("hf-before", "lai_before_hf:HFTarget")
    return str(folder)


def run_side(backend: str, task: str, protocol: str, pool: str, limit: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    options = {"threads": args.threads} if args.threads else {}
    started, cpu = time.monotonic(), time.process_time()
    summary = evaluate_model(
        MODEL, [task], out, protocol=protocol, limit=limit, pool=pool, backend=backend,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, data_dir=args.data_dir,
        target_options=options,
    )  # fmt: skip
    whole, cpu = time.monotonic() - started, time.process_time() - cpu
    result = summary["tasks"][task]
    records = {r["id"]: r for r in map(json.loads, (out / f"{task}.jsonl").read_text().splitlines())}
    return {
        "seconds": result["seconds"], "whole_seconds": round(whole, 2), "whole_cpu_seconds": round(cpu, 2),
        "score": result["score"], "records": records,
    }  # fmt: skip


def loglikelihoods(response: str) -> list[float]:
    return [float(v) for v in re.findall(r"=(-?[\d.]+(?:e-?\d+)?)", response)]


def compare(before: dict[str, Any], after: dict[str, Any], mode: str) -> dict[str, Any]:
    ids = sorted(before)
    assert ids == sorted(after), "the two sides answered different rows"
    same_answer = sum(before[i]["extracted"] == after[i]["extracted"] for i in ids)
    report: dict[str, Any] = {"same_answer": f"{same_answer}/{len(ids)}"}
    if mode == "generate":
        report["same_text"] = f"{sum(before[i]['response'] == after[i]['response'] for i in ids)}/{len(ids)}"
    else:
        report["max_loglik_diff_printed"] = max(
            abs(a - b)
            for i in ids
            for a, b in zip(loglikelihoods(before[i]["response"]), loglikelihoods(after[i]["response"]), strict=True)
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the backend's, all cores)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; even rounds run 'after' first")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"any of {', '.join(TASKS)}")
    parser.add_argument("--limit", type=int, default=None, help="rows per task (default: 40, ARC's 30)")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-eval-throughput")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "eval_throughput.json")
    args = parser.parse_args()
    if args.data_dir is None:
        sys.exit("benchmark data not found: set LAI_DATA_DIR")
    install_before(args.before_rev)
    import torch
    import transformers

    chosen = args.tasks.split(",")
    if unknown := sorted(set(chosen) - set(TASKS)):
        sys.exit(f"unknown task label(s) {', '.join(unknown)}: choose from {', '.join(TASKS)}")
    report: dict[str, Any] = {
        "before": f"git {args.before_rev} (src/lai/targets/hf.py, greedy.py)",
        "after": "working tree",
        "model": MODEL,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads or "backend default (all cores)",
        "tasks": {},
    }
    for label in chosen:
        task, protocol, pool, default_limit = TASKS[label]
        limit = args.limit or default_limit
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        for round_ in range(args.repeats):
            sides = [("before", "hf-before"), ("after", "hf")]
            for side, backend in sides if round_ % 2 == 0 else sides[::-1]:
                print(f"{label} ({protocol}), round {round_ + 1}: {side} ...", flush=True)
                runs[side].append(run_side(backend, task, protocol, pool, limit, args.out / f"{label}-{side}", args))
                print(f"  {runs[side][-1]['seconds']} s", flush=True)
        n = len(runs["after"][0]["records"])
        mode = "loglikelihood" if task in ("arc_challenge", "mmlu") and protocol == "lm-eval" else "generate"
        entry: dict[str, Any] = {"task": task, "protocol": protocol, "pool": pool, "scoring": mode, "rows": n}
        for side in ("before", "after"):
            seconds = statistics.median(r["seconds"] for r in runs[side])
            entry[side] = {
                "seconds": [r["seconds"] for r in runs[side]],
                "whole_seconds": [r["whole_seconds"] for r in runs[side]],
                "whole_cpu_seconds": [r["whole_cpu_seconds"] for r in runs[side]],
                "items_per_s": round(n / seconds, 3),
                "score": runs[side][0]["score"],
            }
        entry["speedup"] = round(entry["after"]["items_per_s"] / entry["before"]["items_per_s"], 2)
        entry["agreement"] = compare(runs["before"][0]["records"], runs["after"][0]["records"], mode)
        report["tasks"][label] = entry
        print(json.dumps({label: entry}, indent=2), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
