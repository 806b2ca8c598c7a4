"""A scripted instructor for fast tests (registered like a real backend).

Replies come from a queue (``enqueue``) when one is set, otherwise from a deterministic
rule: a JSON reply with ``n_requested`` simple arithmetic samples derived from the
request id (at most ``max_tokens // 40``, as a real reply is cut by its token limit). Options for pipeline tests: ``delay_s`` slows each request, ``request_log``
appends one line per request actually sent (so a test can prove nothing is sent twice),
``garbage_every`` makes every k-th request return unparseable text; re-solve requests
(the verify stage) are answered with the sum of the problem's numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from typing import Any

from lai.instructor.base import Instructor, InstructRequest, record_for
from lai.records import InstructRecord


class ScriptedInstructor(Instructor):
    def __init__(
        self,
        *,
        model: str = "scripted-instructor",
        delay_s: float = 0.0,
        request_log: str | None = None,
        garbage_every: int = 0,
        concurrency: int = 1,
        wrong_answers: list[str] | None = None,
        max_tokens: int = 1024,
        **settings: Any,
    ) -> None:
        self.wrong_answers = set(wrong_answers or ())
        self.model_name = model
        self.delay_s = float(delay_s)
        self.request_log = request_log
        self.garbage_every = int(garbage_every)
        # Like a real endpoint, a reply holds what max_tokens allows (~40 tokens a sample),
        # not whatever was asked: a budget of 10^6 must not make 10^6-sample replies.
        self.max_samples = max(1, int(max_tokens) // 40)
        self.concurrency = concurrency
        self.queue: list[str] = []
        self.history: list[InstructRequest] = []
        self._lock = threading.Lock()

    def enqueue(self, replies: list[str]) -> None:
        self.queue.extend(replies)

    def _rule(self, request: InstructRequest) -> str:
        seed = int.from_bytes(hashlib.sha256(request.id.encode()).digest()[:4], "big")
        if self.garbage_every and seed % self.garbage_every == 0:
            return "I am not sure what you want me to do here."
        if request.strategy == "resolve":
            return self._solve(request)
        samples = []
        for k in range(min(request.n_requested, self.max_samples)):
            a, b = 3 + (seed + k) % 50, 7 + (seed // 7 + 3 * k) % 40
            samples.append(
                {
                    "question": f"A shop has {a} red pens and {b} blue pens. How many pens are there in all?",
                    "solution": f"Add the two colours: {a} + {b} = {a + b}.",
                    "answer": str(a + b),
                }
            )
        return json.dumps({"diagnosis": "The student adds the wrong quantities.", "samples": samples})

    def _solve(self, request: InstructRequest) -> str:
        """Re-solve one of its own problems: they all ask for the sum of their numbers.

        Samples whose id is in ``wrong_answers`` (a test option) are solved wrongly.
        """
        problem = request.messages[-1]["content"].split("## Problem", 1)[-1].split("Reply with", 1)[0]
        total = sum(int(n) for n in re.findall(r"\d+", problem))
        if request.source_ids and request.source_ids[0] in self.wrong_answers:
            total += 1
        return json.dumps({"reasoning": "Add the numbers.", "answer": total})

    def complete(self, request: InstructRequest) -> InstructRecord:
        with self._lock:
            self.history.append(request)
            reply = self.queue.pop(0) if self.queue else self._rule(request)
            if self.request_log:
                with open(self.request_log, "a", encoding="utf-8") as handle:
                    handle.write(request.id + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
        if self.delay_s:
            time.sleep(self.delay_s)
        prompt_tokens = sum(len(m["content"].split()) for m in request.messages)
        return record_for(
            request,
            status="ok",
            reply=reply,
            finish_reason="stop",
            model=self.model_name,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(reply.split()),
        )
