"""kill -9 at random moments during a 200-request instruct stage, against the fault server.

Counted from the server's log (tests/helpers/kill_resume.py): no reply that lai had
received is ever served (paid) again, at most ``concurrency`` calls per kill are sent
again (the ones on the wire), every request ends with exactly one good record, and the
money lai books equals what the server billed for the replies lai received; with a
``max_cost``, the bill stays within the cap plus the calls on the wire at the kills.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lai.instructor.runner import final_records
from lai.records import InstructRecord
from lai.store import read_records
from tests.helpers.kill_resume import kill_and_resume

CONCURRENCY = 4


@pytest.mark.slow  # over 10 s per seed
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_at_random_moments_never_pays_twice_for_a_received_reply(tmp_path: Path, seed: int) -> None:
    outcome = kill_and_resume(tmp_path, n=200, concurrency=CONCURRENCY, kills=8, seed=seed)
    assert outcome.kills == 8 and outcome.exit_codes == [0], outcome.as_dict()
    assert outcome.repaid == 0, outcome.as_dict()
    assert outcome.resent_in_flight <= CONCURRENCY * outcome.kills, outcome.as_dict()
    final = final_records(tmp_path / "instruct.jsonl")
    assert len(final) == 200 and all(r.status == "ok" for r in final.values())
    # One line per request: no request with a good record was sent again.
    lines = Counter(r.id for r in read_records(tmp_path / "instruct.jsonl", InstructRecord))
    assert set(lines.values()) == {1}
    # Every reply lai received is booked once, at the server's price.
    assert outcome.received > 200
    assert outcome.booked == pytest.approx(outcome.billed_booked)


def test_max_cost_holds_across_kills(tmp_path: Path) -> None:
    # Each call costs about $0.05-0.3 here (see PRICES); the whole stage about $40.
    cap = 15.0
    outcome = kill_and_resume(tmp_path, n=200, concurrency=CONCURRENCY, kills=6, seed=3, max_cost=cap, max_gap=12)
    assert outcome.kills >= 3 and outcome.exit_codes == [3], outcome.as_dict()  # stopped by the budget
    assert outcome.repaid == 0, outcome.as_dict()
    assert outcome.booked <= cap and outcome.booked == pytest.approx(outcome.billed_booked), outcome.as_dict()
    # What the server billed beyond lai's books: replies on the wire at a kill, at most
    # `concurrency` per kill, each at most the largest single call.
    largest = 0.4
    assert outcome.billed <= cap + outcome.kills * CONCURRENCY * largest, outcome.as_dict()
    assert outcome.booked > cap / 2  # it did spend, up to near the cap
