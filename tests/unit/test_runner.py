from __future__ import annotations

import threading
from pathlib import Path

from lai.instructor.base import InstructRequest
from lai.instructor.runner import pending_requests, run_requests
from lai.instructor.scripted import ScriptedInstructor
from lai.records import InstructRecord
from lai.store import read_records


def request(i: int) -> InstructRequest:
    return InstructRequest(
        id=f"r{i}", source_ids=[f"s{i}"], task="gsm8k", strategy="le", n_requested=1,
        messages=[{"role": "user", "content": f"q{i}"}],
    )  # fmt: skip


class BlockingInstructor(ScriptedInstructor):
    """Request r1 waits until the test has seen r0 on disk."""

    def __init__(self, out: Path) -> None:
        super().__init__(concurrency=2)
        self.out = out
        self.release = threading.Event()
        self.seen_r0_first = False

    def complete(self, req: InstructRequest) -> InstructRecord:
        if req.id == "r1":
            for _ in range(200):
                if self.out.exists() and "r0" in self.out.read_text():
                    self.seen_r0_first = True
                    break
                self.release.wait(0.01)
        return super().complete(req)


def test_each_reply_is_written_as_soon_as_it_arrives(tmp_path: Path) -> None:
    out = tmp_path / "instruct.jsonl"
    instructor = BlockingInstructor(out)
    run_requests(instructor, [request(0), request(1)], out)
    assert instructor.seen_r0_first, "r0's reply must be on disk while r1 is still in flight"
    assert sorted(r.id for r in read_records(out, InstructRecord)) == ["r0", "r1"]


def test_only_missing_requests_are_pending(tmp_path: Path) -> None:
    out = tmp_path / "instruct.jsonl"
    run_requests(ScriptedInstructor(), [request(0), request(2)], out)
    assert [r.id for r in pending_requests([request(i) for i in range(4)], out)] == ["r1", "r3"]
