"""A stand-in for ``python -m vllm.entrypoints.openai.api_server`` (no GPU, no vLLM).

Takes vLLM's flags (``--model --host --port --served-model-name --max-model-len`` and any
others), answers ``/v1/models`` with the served name and every chat completion with a
fixed JSON reply, the way tests/helpers/openai_server.py does. ``--record FILE`` writes its
argv, pid and environment variable names there once it listens, so a test can check the
command line lai built and find the process to watch. It dies on SIGTERM like a server.
``--crash-on N`` makes it print a last log line and kill itself with ``--crash-signal``
(default SIGILL, what a llama.cpp build for the wrong CPU does) on its N-th chat request;
with ``--crash-once FILE`` only while FILE does not exist yet (it is created first), so a
restarted server then serves normally.

Run as a script (``python fake_vllm_server.py ...``): lai starts it through
``instructor.local.launcher`` with a minimal environment, so it imports only the standard
library and its sibling module.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
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
    parser.add_argument("--crash-on", type=int, default=0)
    parser.add_argument("--crash-signal", default="SIGILL")
    parser.add_argument("--crash-once")
    parser.add_argument("--reply", default=REPLY, help="the content of every chat reply")
    args, _others = parser.parse_known_args()
    served = args.served_model_name
    chats = 0
    lock = threading.Lock()

    def maybe_crash() -> None:
        nonlocal chats
        with lock:
            chats += 1
            if chats != args.crash_on or (args.crash_once and os.path.exists(args.crash_once)):
                return
            if args.crash_once:
                Path(args.crash_once).touch()
            print(f"stand-in: about to die of {args.crash_signal} on chat request {chats}", flush=True)
            # To this thread: a process-wide kill may land on the main thread while this one
            # still sends its reply (seen on a busy machine).
            signal.pthread_kill(threading.get_ident(), getattr(signal, args.crash_signal))

    class Handler(JSONHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/v1/models":
                self._send(404, b'{"error": "not found"}')
                return
            self._send(200, json.dumps({"object": "list", "data": [{"id": served, "object": "model"}]}).encode())

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            maybe_crash()
            payload = {
                "id": "chatcmpl-standin", "object": "chat.completion", "created": 0, "model": body.get("model", served),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": args.reply}, "finish_reason": "stop"}],
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
