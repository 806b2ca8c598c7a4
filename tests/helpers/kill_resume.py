"""Kill -9 a real instruct stage at random moments and count, from the server's side, what
was paid twice. Shared by tests/unit/test_durability_kill.py and bench/kill_resume.py.

The stage runs in a child process (:data:`CHILD`: the async client, the request cache, the
spend log and the runner, as ``lai run`` wires them) against a :class:`LoggingFaultServer`
in this process, which outlives every kill. The server gives every reply it serves a
unique id and a unique nonce inside the text, and logs it with the call it answered (a
hash of the messages: a corrective retry is a call of its own). A reply counts as
*received by lai* when lai's spend log holds its id, or when its nonce came back to the
server inside a later request (the corrective retry quotes the reply it corrects): the
second is evidence the client had the reply in hand, whatever lai wrote down. A reply
*paid twice* is a call served again after an earlier reply to it had been received;
that number must be 0. Calls served again whose earlier reply never reached lai (on the
wire at the kill) are counted apart; at most ``concurrency`` per kill.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[2]
NONCE = re.compile(r"nonce-[0-9a-f]{12}")
PRICES = {"teacher": {"prompt": 1000.0, "completion": 4000.0}}  # $ per 1M tokens


def call_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()[:16]


class LoggingFaultServer(FaultServer):
    """A FaultServer whose every served reply has its own id and nonce, logged in order."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("reply_fn", self._reply)
        super().__init__(**kwargs)
        self.served: list[dict[str, Any]] = []  # one per 200 reply with content, in order
        self.quoted: set[str] = set()  # nonces that came back inside a request
        self._served_lock = threading.Lock()

    @staticmethod
    def _reply(request_id: str, body: dict[str, Any], attempt: int) -> str:
        nonce = f"nonce-{uuid.uuid4().hex[:12]}"
        corrective = len(body.get("messages", [])) > 1
        # One request in three first answers in prose: the corrective retry's case.
        number = int(hashlib.sha256(request_id.encode()).hexdigest()[:6], 16)
        if number % 3 == 0 and not corrective:
            return f"Here is my analysis in prose, no samples ({nonce})."
        samples = [{"question": f"q for {request_id} {nonce}", "solution": "s", "answer": "1"}]
        return json.dumps({"diagnosis": "d", "samples": samples})

    def _admit(self, request_id: str, body: dict[str, Any]) -> tuple[str, int, float]:
        text = json.dumps(body.get("messages"))
        with self._served_lock:
            self.quoted.update(NONCE.findall(text))
        return super()._admit(request_id, body)

    def _payload(self, body: dict[str, Any], reply: str | None, finish: str) -> dict[str, Any]:  # type: ignore[override]
        payload = FaultServer._payload(body, reply, finish)
        if reply is not None:
            payload["id"] = f"chatcmpl-{uuid.uuid4().hex}"
            usage = payload["usage"]
            cost = (usage["prompt_tokens"] * PRICES["teacher"]["prompt"] + usage["completion_tokens"] * PRICES["teacher"]["completion"]) / 1e6
            nonces = NONCE.findall(reply)
            with self._served_lock:
                self.served.append({"call": call_hash(body), "id": payload["id"], "nonce": nonces[0] if nonces else None, "cost": cost})
        return payload


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lai.instructor.async_client import AsyncOpenAIInstructor
    from lai.instructor.base import InstructRequest
    from lai.instructor.ledger import BudgetExceeded, CostLedger
    from lai.instructor.runner import pending_requests, run_requests

    base_url, tmp, n, concurrency = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    max_cost = float(sys.argv[5]) or None
    prices = {"teacher": {"prompt": 1000.0, "completion": 4000.0}}
    schema = {"type": "object", "properties": {"samples": {"type": "array"}}}
    requests = [
        InstructRequest(
            id=f"le:gsm8k/train/{i}", source_ids=[f"gsm8k/train/{i}"], task="gsm8k", strategy="le",
            n_requested=1, messages=[{"role": "user", "content": f"help with error {i}"}], schema=schema,
        )
        for i in range(n)
    ]
    ledger = CostLedger(prices, path=tmp / "ledger.json", spend_path=tmp / "spend.jsonl")
    instructor = AsyncOpenAIInstructor(
        base_url=base_url, model="teacher", timeout_s=0.4, max_retries=8, concurrency=concurrency,
        backoff_base_s=0.02, backoff_max_s=0.2, max_tokens=60, cache_path=tmp / "cache.sqlite", ledger=ledger,
    )
    out = tmp / "instruct.jsonl"
    try:
        run_requests(instructor, pending_requests(requests, out), out, max_cost=max_cost)
    except BudgetExceeded:
        sys.exit(3)
    finally:
        instructor.close()
    """
)


@dataclass
class Outcome:
    kills: int = 0
    runs: int = 0
    exit_codes: list[int] = field(default_factory=list)
    served: int = 0  # replies the server served (each one billed)
    received: int = 0  # of those, replies lai had in hand (spend log, or quoted back)
    repaid: int = 0  # calls served again after an earlier reply had been received: must be 0
    resent_in_flight: int = 0  # calls served again whose earlier reply never reached lai
    billed: float = 0.0  # what the server served, priced
    booked: float = 0.0  # what lai's spend log says it spent
    billed_booked: float = 0.0  # what the server billed for the replies in lai's spend log
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


#: Imports what :data:`CHILD` imports once (the OpenAI client alone costs ~0.7 s a process),
#: then, per line of JSON arguments on stdin, forks a child that runs CHILD in a session of
#: its own and prints the child's pid, then its exit status (negative: killed by that
#: signal). Each run is still a process of its own, killed with kill -9 and started afresh
#: from what is on disk; only the interpreter start and the imports are shared.
ZYGOTE = textwrap.dedent(
    """
    import json, os, sys
    import lai.instructor.async_client, lai.instructor.base, lai.instructor.ledger, lai.instructor.runner
    child = compile(sys.argv[1], "<kill_resume child>", "exec")
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            sys.argv = ["-c", *json.loads(line)]
            code = 1
            try:
                exec(child, {"__name__": "__main__"})
                code = 0
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            finally:
                os._exit(code)
        print(pid, flush=True)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    """
)


class Zygote:
    """The process :data:`ZYGOTE` runs; :meth:`start` gives one :class:`ForkedChild` at a time."""

    def __init__(self) -> None:
        env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")])}
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, CHILD], cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    def start(self, *args: str) -> ForkedChild:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(list(args)) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the kill_resume zygote died (exit status {self.process.wait()})")
        return ForkedChild(int(line), self.process.stdout)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class ForkedChild:
    """Popen's ``pid``, ``poll`` and ``wait`` for a child the zygote forked and reaps."""

    def __init__(self, pid: int, status_lines: Any) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._reader = threading.Thread(target=self._read, args=(status_lines,), daemon=True)
        self._reader.start()

    def _read(self, status_lines: Any) -> None:
        line = status_lines.readline()
        self.returncode = int(line) if line.strip() else -signal.SIGKILL  # the zygote itself died

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._reader.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired("kill_resume child", timeout or 0)
        return self.returncode


def run_child(zygote: Zygote, base_url: str, tmp: Path, n: int, concurrency: int, max_cost: float | None) -> ForkedChild:
    return zygote.start(base_url, str(tmp), str(n), str(concurrency), str(max_cost or 0))


def kill_and_resume(
    tmp: Path,
    *,
    n: int = 200,
    concurrency: int = 4,
    kills: int = 10,
    max_cost: float | None = None,
    seed: int = 0,
    fault_rate: float = 0.3,
    max_gap: int = 30,
) -> Outcome:
    """Run the stage, kill -9 it ``kills`` times after a random number of served replies
    (1..max_gap: counted, not timed, so a slow machine changes nothing), then let it finish."""
    rng = random.Random(seed)
    outcome = Outcome()
    started = time.monotonic()
    faults = ("429", "500", "503", "timeout", "close", "malformed", "empty")
    zygote = Zygote()
    with contextlib.ExitStack() as stack:
        stack.callback(zygote.close)
        server = stack.enter_context(LoggingFaultServer(fault_rate=fault_rate, faults=faults, seed=seed, latency_s=0.01, retry_after_s=0.05, hang_s=0.6))
        while True:
            child = run_child(zygote, server.base_url, tmp, n, concurrency, max_cost)
            outcome.runs += 1
            try:
                if outcome.kills < kills:
                    target = len(server.served) + rng.randint(1, max_gap)
                    deadline = time.monotonic() + 120
                    while len(server.served) < target and child.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.002)
                    if child.poll() is None:
                        os.killpg(child.pid, signal.SIGKILL)
                        outcome.kills += 1
                code = child.wait(timeout=300)
            finally:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
            if code >= 0:  # ended on its own: done, or stopped by the budget
                outcome.exit_codes.append(code)
                break
        served, quoted = list(server.served), set(server.quoted)
    booked_ids, booked = set(), 0.0
    spend = tmp / "spend.jsonl"
    if spend.exists():
        for line in spend.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                booked_ids.add(row.get("response_id"))
                booked += float(row["cost"])
    seen: set[str] = set()
    received_calls: set[str] = set()
    for reply in served:
        got = reply["id"] in booked_ids or (reply["nonce"] is not None and reply["nonce"] in quoted)
        if reply["call"] in received_calls:
            outcome.repaid += 1
        elif reply["call"] in seen:
            outcome.resent_in_flight += 1
        seen.add(reply["call"])
        if got:
            outcome.received += 1
            received_calls.add(reply["call"])
    outcome.served = len(served)
    outcome.billed = sum(r["cost"] for r in served)
    outcome.booked = booked
    outcome.billed_booked = sum(r["cost"] for r in served if r["id"] in booked_ids)
    outcome.seconds = time.monotonic() - started
    return outcome
