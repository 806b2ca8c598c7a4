"""A minimal OpenAI-compatible chat server on 127.0.0.1 for tests, with scripted replies.

Each POST to /v1/chat/completions takes the next behaviour from ``script`` (or the
default): a reply text, an HTTP status to fail with, or raw bytes (garbage). Every
request body is kept in ``requests`` so a test can assert what was sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JSONHandler(BaseHTTPRequestHandler):
    """What both test servers share: quiet logs, JSON replies, and the /v1/models answer."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        models = {"object": "list", "data": [{"id": "test-model", "object": "model"}]}
        self._send(200, json.dumps(models).encode())


@dataclass
class Behaviour:
    reply: str = '{"diagnosis": "d", "samples": []}'
    status: int = 200
    raw: bytes | None = None
    finish_reason: str = "stop"
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedOpenAIServer:
    def __init__(self, default: Behaviour | None = None) -> None:
        self.script: list[Behaviour] = []
        self.default = default or Behaviour()
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(body)
                behaviour = server.script.pop(0) if server.script else server.default
                if behaviour.raw is not None:
                    self._send(behaviour.status, behaviour.raw, behaviour.headers)
                    return
                if behaviour.status != 200:
                    self._send(behaviour.status, json.dumps({"error": {"message": "scripted failure"}}).encode(), behaviour.headers)
                    return
                payload = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "test-model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": behaviour.reply},
                            "finish_reason": behaviour.finish_reason,
                        }
                    ],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                }
                self._send(200, json.dumps(payload).encode(), behaviour.headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # shutdown() waits for the serving loop to look at its flag, once per poll interval
        # (0.5 s by default: half a second of every test that stops a server).
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> ScriptedOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
