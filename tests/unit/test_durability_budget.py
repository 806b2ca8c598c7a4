"""The dry run's "at most" is a bound: checked against a real run that pays for corrective
retries and re-solves; and it answers for a budget of a million samples in moments."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from lai.config import build_config
from lai.pipeline import Pipeline
from tests.helpers.fault_server import FaultServer, default_reply
from tests.unit.test_durability_run import config

PRICES = {"teacher": {"prompt": 1000.0, "completion": 4000.0}}


def reply(request_id: str, body: dict[str, Any], attempt: int) -> str:
    """Half the sample requests first answer in prose (a corrective retry follows)."""
    prose = int(hashlib.sha256(request_id.encode()).hexdigest()[:4], 16) % 2 == 0
    if prose and not request_id.startswith("resolve") and len(body["messages"]) == 1:
        return "Let me think about this student's error in prose first."
    if "## Problem" in body["messages"][-1]["content"]:
        return json.dumps({"reasoning": "add", "answer": 1})
    return default_reply(request_id, body, attempt)


def test_dry_run_bound_holds_against_a_real_run(tmp_path: Path, data_dir: Path) -> None:
    with FaultServer(reply_fn=reply) as server:
        instructor = {"backend": "openai", "base_url": server.base_url, "model": "teacher", "max_tokens": 200, "prices": PRICES}
        cfg = build_config(config(data_dir, instructor=instructor, verify={"resolve": {"enabled": True, "n": 2, "max_tokens": 100}}))
        bill = Pipeline(cfg, tmp_path / "run").dry_run()
        assert server.total_received == 0  # a dry run sends nothing
        Pipeline(cfg, tmp_path / "run").run()
        paid = sum(server.succeeded.values())
    spend = [json.loads(line) for line in (tmp_path / "run" / "spend.jsonl").read_text().splitlines()]
    corrective = sum(row["kind"] == "corrective" for row in spend)
    assert corrective > 0 and any(row["stage"] == "verify" for row in spend)  # both kinds happened
    assert len(spend) == paid  # every paid reply is in the spend log, once
    assert paid <= bill["calls"], (paid, bill)
    assert sum(row["cost"] for row in spend) <= bill["cost"], bill
    assert sum(row["completion_tokens"] for row in spend) <= bill["completion_tokens"]
    # The report states what was paid from the books, corrective retries included, which
    # the per-request records (one final record each) cannot show.
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"**${sum(row['cost'] for row in spend):.4f}** over {len(spend)} call(s)" in report


def test_dry_run_for_a_budget_of_a_million_answers_at_once(tmp_path: Path, data_dir: Path) -> None:
    cfg = build_config(config(data_dir, strategy={"budget": 1_000_000}, verify={"resolve": {"enabled": True}}))
    started = time.process_time()
    bill = Pipeline(cfg, tmp_path / "run").dry_run()
    took = time.process_time() - started  # CPU time: a busy neighbour does not count
    assert bill["verify"]["calls"] >= 3_000_000  # n solves of every one of the ~10^6 samples
    assert took < 30, took  # bench: well under 10 s wall
