"""Each paid reply is on disk before anything else happens to it, corrective retry included."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from lai.instructor.ledger import CostLedger
from lai.instructor.runner import final_records, pending_requests, run_requests
from lai.records import InstructRecord
from lai.store import read_records
from tests.helpers.fault_server import FaultServer, default_reply
from tests.unit.test_async_instructor import client, request

PRICES = {"teacher": {"prompt": 1000.0, "completion": 4000.0}}
PROSE = "Let me explain the error in prose first."


def test_first_reply_of_a_corrective_retry_is_durable_before_the_retry_is_sent(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def reply(request_id: str, body: dict[str, Any], attempt: int) -> str:
        if attempt == 0:
            return PROSE
        # The corrective retry is on the wire: look at the disk from outside the client.
        with sqlite3.connect(tmp_path / "cache.sqlite") as db:
            calls = [json.loads(row[0]) for row in db.execute("SELECT reply FROM calls")]
        spend = [json.loads(line) for line in (tmp_path / "spend.jsonl").read_text().splitlines()]
        seen.append({"calls": calls, "spend": spend})
        return default_reply(request_id, body, attempt)

    ledger = CostLedger(PRICES, spend_path=tmp_path / "spend.jsonl")
    with FaultServer(reply_fn=reply) as server:
        instructor = client(server, cache_path=tmp_path / "cache.sqlite", ledger=ledger)
        run_requests(instructor, [request(0)], tmp_path / "instruct.jsonl")
        instructor.close()
    [at_retry] = seen
    assert [c["reply"] for c in at_retry["calls"]] == [PROSE]
    [first] = at_retry["spend"]
    assert (first["kind"], first["reply"], first["request_id"]) == ("first", PROSE, request(0).id)
    assert first["cost"] > 0 and first["response_id"]


def test_a_resumed_corrective_retry_does_not_pay_for_the_first_reply_again(tmp_path: Path) -> None:
    rid = request(0).id
    # The prose reply arrives, then every corrective attempt fails (500)...
    plan = {rid: ["ok", "500", "500"]}
    with FaultServer(reply_fn=lambda i, b, a: PROSE if a == 0 else default_reply(i, b, a), plan=plan) as server:
        ledger = CostLedger(PRICES, spend_path=tmp_path / "spend.jsonl")
        instructor = client(server, cache_path=tmp_path / "cache.sqlite", ledger=ledger, max_retries=1)
        instructor.complete(request(0))
        # ...and the process dies before the request's record is final: only the state of
        # single calls (spend log, calls table) is left.
        instructor.cache._conn.execute("DELETE FROM replies")  # type: ignore[union-attr]
        instructor.cache._conn.commit()  # type: ignore[union-attr]
        instructor.close()
        assert server.received[rid] == 3
        # The next process sends only the corrective call.
        ledger = CostLedger(PRICES, spend_path=tmp_path / "spend.jsonl")
        spent_before = ledger.cost()
        instructor = client(server, cache_path=tmp_path / "cache.sqlite", ledger=ledger)
        record = instructor.complete(request(0))
        instructor.close()
        bodies = [body for i, body in server.bodies if i == rid][3:]
    assert len(bodies) == 1 and bodies[0]["messages"][-2]["content"] == PROSE  # the corrective call
    spend = [json.loads(line) for line in (tmp_path / "spend.jsonl").read_text().splitlines()]
    assert [row["kind"] for row in spend] == ["first", "corrective"]
    assert ledger.cost() > spent_before and record.status == "ok" and record.reply != PROSE


def test_failed_requests_are_pending_again_and_the_good_record_wins(tmp_path: Path) -> None:
    out = tmp_path / "instruct.jsonl"
    with FaultServer(plan={request(1).id: ["400"]}) as server:
        run_requests(client(server), [request(0), request(1)], out)
    assert [r.id for r in pending_requests([request(0), request(1)], out)] == [request(1).id]
    with FaultServer() as server:
        run_requests(client(server), pending_requests([request(0), request(1)], out), out)
        assert set(server.received) == {request(1).id}
    lines = read_records(out, InstructRecord)
    # The first run's two records land in the order the replies came back (concurrently);
    # the resumed request's record is appended after them.
    seen = [(r.id, r.status) for r in lines]
    assert sorted(seen[:2]) == [(request(0).id, "ok"), (request(1).id, "failed")] and seen[2:] == [(request(1).id, "ok")]
    assert {r.status for r in final_records(out).values()} == {"ok"}


def test_a_reply_in_the_spend_log_but_not_in_the_cache_is_not_paid_again(tmp_path: Path) -> None:
    """A kill between the spend-log line and the cache row: the log gives the reply back."""
    with FaultServer() as server:
        ledger = CostLedger(PRICES, spend_path=tmp_path / "spend.jsonl")
        instructor = client(server, cache_path=tmp_path / "cache.sqlite", ledger=ledger)
        first = instructor.complete(request(0))
        for table in ("replies", "calls"):
            instructor.cache._conn.execute(f"DELETE FROM {table}")  # type: ignore[union-attr]
        instructor.cache._conn.commit()  # type: ignore[union-attr]
        instructor.close()
        instructor = client(server, cache_path=tmp_path / "cache.sqlite", ledger=CostLedger(PRICES, spend_path=tmp_path / "spend.jsonl"))
        again = instructor.complete(request(0))
        instructor.close()
        assert server.received[request(0).id] == 1
    assert again.reply == first.reply
    assert len((tmp_path / "spend.jsonl").read_text().splitlines()) == 1
