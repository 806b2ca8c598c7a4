"""`lai eval` against lm-evaluation-harness: same model, same rows, same machine, one run.

Both run greedy GSM8K chain-of-thought under lm-eval's gsm8k_cot protocol (8-shot,
stop at "Q:", strict-match and flexible-extract filters) on the first N rows of the
local GSM8K test file, as separate processes, one after the other. The script reports
items per second of each (whole command, model loading included), the ratio, and the
per-item agreement of the extracted answers.

lm-eval loads its tasks from the hub, so offline it gets a task file that includes its
own gsm8k-cot.yaml and points at the local JSONL (the way ../shared/FACTS.md describes).
lm-eval is not a lai dependency: install it in a separate environment and pass its
python with --lm-eval-python (default: $LM_EVAL_PYTHON or /work/lmeval-venv/bin/python):

    python3 -m venv /work/lmeval-venv && /work/lmeval-venv/bin/pip install torch==2.13.0 lm-eval==0.4.13
    .venv/bin/python bench/lm_eval_compare.py --limit 40 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from lai.data import default_data_dir  # noqa: E402
from lai.locate import locate_model  # noqa: E402
from lai.tasks.gsm8k import LM_EVAL_FLEXIBLE, LM_EVAL_STRICT, lm_eval_filter  # noqa: E402

LOCAL_TASK = """\
include: gsm8k-cot.yaml
task: gsm8k_cot_local
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: {test}
    train: {train}
"""


def run(command: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lai-batch-size", type=int, default=None, help="lai's batch size (default: --batch-size)")
    parser.add_argument("--lm-eval-python", default=os.environ.get("LM_EVAL_PYTHON", "/work/lmeval-venv/bin/python"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-lm-eval")
    args = parser.parse_args()

    data = default_data_dir()
    if data is None:
        sys.exit("benchmark data not found: set LAI_DATA_DIR")
    test_file = data / "gsm8k" / "test_sample.jsonl"
    train_file = data / "gsm8k" / "train.jsonl"
    model_dir = locate_model("embedded:smollm2-135m-instruct").location
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    # lm-evaluation-harness
    lm_eval_tasks = Path(
        subprocess.check_output(
            [args.lm_eval_python, "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"], text=True
        ).strip()
    ) / "tasks" / "gsm8k"
    include = Path(tempfile.mkdtemp(prefix="lai-bench-"))
    shutil.copy(lm_eval_tasks / "gsm8k-cot.yaml", include / "gsm8k-cot.yaml")
    (include / "gsm8k_local.yaml").write_text(LOCAL_TASK.format(test=test_file, train=train_file))
    lm_eval_seconds = run(
        [
            args.lm_eval_python, "-m", "lm_eval", "--model", "hf",
            "--model_args", f"pretrained={model_dir},dtype=float32",
            "--tasks", "gsm8k_cot_local", "--include_path", str(include), "--limit", str(args.limit),
            "--batch_size", str(args.batch_size), "--log_samples", "--output_path", str(args.out / "lm-eval"),
        ],
        env,
    )  # fmt: skip
    samples_file = next((args.out / "lm-eval").rglob("samples_gsm8k_cot_local_*.jsonl"))
    theirs = {row["doc_id"]: row for row in map(json.loads, samples_file.read_text().splitlines())}

    # lai
    lai_seconds = run(
        [
            sys.executable, "-m", "lai.cli", "eval", "--model", model_dir, "--tasks", "gsm8k",
            "--protocol", "lm-eval", "--limit", str(args.limit), "--out", str(args.out / "lai"),
            "--batch-size", str(args.lai_batch_size or args.batch_size),
        ],
        {**env, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    ours = [json.loads(line) for line in (args.out / "lai" / "gsm8k.jsonl").read_text().splitlines()]
    ours.sort(key=lambda r: int(r["id"].rsplit("/", 1)[1]))

    strict_agree = flexible_agree = same_text = 0
    for index, row in enumerate(ours):
        other = theirs[index]
        their_text = other["resps"][0][0]
        their_strict = lm_eval_filter(LM_EVAL_STRICT, their_text, 0)
        their_flexible = lm_eval_filter(LM_EVAL_FLEXIBLE, their_text, -1)
        our_flexible = lm_eval_filter(LM_EVAL_FLEXIBLE, row["response"], -1)
        strict_agree += row["extracted"] == their_strict
        flexible_agree += our_flexible == their_flexible
        same_text += row["response"].strip() == their_text.split("Q:")[0].strip()
    n = len(ours)
    report = {
        "rows": n,
        "batch_size": {"lm_eval": args.batch_size, "lai": args.lai_batch_size or args.batch_size},
        "lm_eval_seconds": round(lm_eval_seconds, 1),
        "lai_seconds": round(lai_seconds, 1),
        "lm_eval_items_per_s": round(n / lm_eval_seconds, 3),
        "lai_items_per_s": round(n / lai_seconds, 3),
        "speedup": round(lm_eval_seconds / lai_seconds, 2),
        "agreement_strict_match": round(strict_agree / n, 4),
        "agreement_flexible_extract": round(flexible_agree / n, 4),
        "identical_responses": round(same_text / n, 4),
    }
    print(json.dumps(report, indent=2))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
