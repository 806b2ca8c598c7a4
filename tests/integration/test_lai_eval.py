"""`lai eval` end to end with the real embedded model: generation, sandboxed code, log-likelihood."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# lai eval runs in a child process: this one only needs to know torch is there, not import it.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")]
REPO = Path(__file__).resolve().parents[2]


def lai_eval(out: Path, data_dir: Path, tasks: str, protocol: str, limit: int, max_new_tokens: int, *extra: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [
        sys.executable, "-m", "lai.cli", "eval", "--model", "embedded:smollm2-135m-instruct", "--tasks", tasks,
        "--protocol", protocol, "--limit", str(limit), "--out", str(out), "--data-dir", str(data_dir),
        "--max-new-tokens", str(max_new_tokens), "--batch-size", "8", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def test_lai_eval_scores_generation_code_and_loglikelihood(data_dir: Path, tmp_path: Path) -> None:
    lai_eval(tmp_path / "paper", data_dir, "gsm8k,humaneval", "paper", 2, 96)
    lai_eval(tmp_path / "arc", data_dir, "arc_challenge", "lm-eval", 4, 8)
    # The shared data has MMLU's dev+validation only: score that pool.
    lai_eval(tmp_path / "mmlu", data_dir, "mmlu", "lm-eval", 4, 8, "--pool", "train")
    paper = json.loads((tmp_path / "paper" / "summary.json").read_text())
    assert set(paper["tasks"]) == {"gsm8k", "humaneval"} and paper["protocol"] == "paper"
    for record in map(json.loads, (tmp_path / "paper" / "humaneval.jsonl").read_text().splitlines()):
        assert record["reason"].startswith(("passed", "failed", "timed out", "no code block")), record["reason"]
        assert record["prompt"][0]["role"] == "user"  # the paper protocol prompts as chat
    for name, folder in (("arc_challenge", "arc"), ("mmlu", "mmlu")):
        result = json.loads((tmp_path / folder / "summary.json").read_text())["tasks"][name]
        assert result["scoring"] == "loglikelihood" and result["n"] == 4
        assert 0.0 <= result["acc_norm"] <= 1.0
    mmlu = [json.loads(line) for line in (tmp_path / "mmlu" / "mmlu.jsonl").read_text().splitlines()]
    assert all(r["extracted"] in "ABCD" and r["group"] for r in mmlu)
    assert mmlu[0]["prompt"].startswith("The following are multiple choice questions (with answers) about")
