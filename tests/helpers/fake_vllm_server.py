"""A stand-in for ``python -m vllm.entrypoints.openai.api_server`` (no GPU, no vLLM).

Takes vLLM's flags (``--model --host --port --served-model-name --max-model-len`` and any
others), answers ``/v1/models`` with the served name and every chat completion with a
fixed JSON reply, the way tests/helpers/openai_server.py does. ``--record FILE`` writes its
argv, pid and environment variable names there once it listens, so a test can check the
command line lai built and find the process to watch. It dies on SIGTERM like a server.

Run as a script (``python fake_vllm_server.py ...``): lai starts it through
``instructor.local.launcher`` with a minimal environment, so it imports only the standard
library and its sibling module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_server import JSONHandler  # noqa: E402

REPLY = '{"diagnosis": "stand-in", "samples": []}'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--max-model-len", type=int, required=True)
    parser.add_argument("--record")
    args, _others = parser.parse_known_args()
    served = args.served_model_name

    class Handler(JSONHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/v1/models":
                self._send(404, b'{"error": "not found"}')
                return
            self._send(200, json.dumps({"object": "list", "data": [{"id": served, "object": "model"}]}).encode())

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            payload = {
                "id": "chatcmpl-standin", "object": "chat.completion", "created": 0, "model": body.get("model", served),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            }  # fmt: skip
            self._send(200, json.dumps(payload).encode())

    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    if args.record:
        record = {"argv": sys.argv[1:], "pid": os.getpid(), "env": sorted(os.environ)}
        Path(args.record).write_text(json.dumps(record))
    print(f"stand-in vLLM server for {args.model} on {args.host}:{args.port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
