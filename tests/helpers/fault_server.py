"""An OpenAI-compatible chat server on 127.0.0.1 that fails on purpose, for tests and benches.

Real endpoints rate-limit, time out, drop connections and return garbage; a client is only
robust if it has met all of these. Faults are drawn with a seeded RNG at ``fault_rate``
from ``faults`` (or scripted per request id with ``plan``), every request waits
``latency_s``, and an optional server-side RPM limit (a token bucket with ``burst_s``
seconds of capacity, like hosted APIs that enforce limits per second) answers 429 with
Retry-After when exceeded. Counters per request id (the ``X-Client-Request-Id`` header)
let a test check that nothing was lost, duplicated or sent again.
"""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from tests.helpers.openai_server import JSONHandler

FAULTS = ("429", "500", "503", "timeout", "close", "malformed", "empty", "length")
#: Faults only a plan asks for: a client error that must not be retried.
EXTRA_FAULTS = ("400",)

ReplyFn = Callable[[str, dict[str, Any], int], str]


def default_reply(request_id: str, body: dict[str, Any], attempt: int) -> str:
    samples = [{"question": f"q for {request_id}", "solution": "s", "answer": "1"}]
    return json.dumps({"diagnosis": "d", "samples": samples})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that gave up (timeouts) leave broken pipes; not worth a traceback


class FaultServer:
    def __init__(
        self,
        *,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        seed: int = 0,
        latency_s: float = 0.0,
        rpm_limit: float | None = None,
        burst_s: float = 1.0,
        retry_after_s: float = 1.0,
        hang_s: float = 2.0,
        plan: dict[str, list[str]] | None = None,
        reply_fn: ReplyFn | None = None,
        keep_bodies: bool = True,
    ) -> None:
        unknown = set(faults) - set(FAULTS) - set(EXTRA_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self.fault_rate = fault_rate
        self.faults = faults
        self.rng = random.Random(seed)
        self.latency_s = latency_s
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.plan = {k: list(v) for k, v in (plan or {}).items()}
        self.reply_fn = reply_fn or default_reply
        self.keep_bodies = keep_bodies
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()  # every POST, per request id
        self.succeeded: Counter[str] = Counter()  # 200 replies with a choice, per request id
        self.faulted: Counter[str] = Counter()  # per fault kind ("rpm" for the limiter)
        self.arrivals: dict[str, list[float]] = {}  # monotonic arrival times per request id
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.success_times: list[float] = []
        # Server-side RPM limit: a token bucket refilling at rpm/60 per second.
        self.rpm_limit = rpm_limit
        self._rate = (rpm_limit or 0) / 60.0
        self._capacity = max(1.0, self._rate * burst_s)
        self._level = self._capacity
        self._last = time.monotonic()
        server = self

        class Handler(JSONHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real endpoints

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                request_id = self.headers.get("X-Client-Request-Id", "?")
                fault, attempt, retry_after = server._admit(request_id, body)
                if server.latency_s:
                    time.sleep(server.latency_s)
                self._answer(fault, request_id, body, attempt, retry_after)

            def _error(self, status: int, headers: dict[str, str] | None = None) -> None:
                error = {"error": {"message": f"injected {status}", "type": "fault"}}
                self._send(status, json.dumps(error).encode(), headers)

            def _answer(
                self, fault: str, request_id: str, body: dict[str, Any], attempt: int, retry: float
            ) -> None:
                if fault in ("429", "rpm"):
                    headers = {
                        "Retry-After": str(math.ceil(retry)),
                        "retry-after-ms": str(int(retry * 1000)),
                    }
                    self._error(429, headers)
                elif fault in ("400", "500", "503"):
                    self._error(int(fault))
                elif fault == "timeout":
                    time.sleep(server.hang_s)  # past the client's timeout
                    self._error(504)
                elif fault == "close":
                    # Close the socket without a response: the client sees a dropped connection.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault == "malformed":
                    self._send(200, b'{"id": "chatcmpl-x", "choices": [{"index": 0, "mess')
                elif fault == "empty":
                    self._send(200, json.dumps(server._payload(body, None, "stop")).encode())
                else:
                    reply = server.reply_fn(request_id, body, attempt)
                    finish = "stop"
                    if fault == "length":
                        reply, finish = reply[: max(1, len(reply) * 2 // 3)], "length"
                    with server.lock:
                        server.succeeded[request_id] += 1
                        server.success_times.append(time.monotonic())
                    self._send(200, json.dumps(server._payload(body, reply, finish)).encode())

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # A short poll interval: stop() returns in 50 ms rather than the default 0.5 s.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _admit(self, request_id: str, body: dict[str, Any]) -> tuple[str, int, float]:
        """Count the request and decide its fate: (fault or "ok", attempt number, retry-after)."""
        with self.lock:
            now = time.monotonic()
            attempt = self.received[request_id]
            self.received[request_id] += 1
            self.arrivals.setdefault(request_id, []).append(now)
            if self.keep_bodies:
                self.bodies.append((request_id, body))
            if self.rpm_limit:
                self._level = min(self._capacity, self._level + (now - self._last) * self._rate)
                self._last = now
                if self._level < 1.0:
                    self.faulted["rpm"] += 1
                    return "rpm", attempt, (1.0 - self._level) / self._rate
                self._level -= 1.0
            planned = self.plan.get(request_id)
            if planned:
                fault = planned.pop(0)
            elif self.fault_rate and self.rng.random() < self.fault_rate:
                fault = self.rng.choice(self.faults)
            else:
                fault = "ok"
            if fault != "ok":
                self.faulted[fault] += 1
            return fault, attempt, self.retry_after_s

    @staticmethod
    def _payload(body: dict[str, Any], reply: str | None, finish: str) -> dict[str, Any]:
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
        choices = []
        if reply is not None:
            message = {"role": "assistant", "content": reply}
            choices = [{"index": 0, "message": message, "finish_reason": finish}]
        completion = len(reply or "") // 4
        return {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "test-model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": completion,
                "total_tokens": prompt_chars // 4 + completion,
            },
        }

    @property
    def total_received(self) -> int:
        with self.lock:
            return sum(self.received.values())

    def start(self) -> FaultServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
