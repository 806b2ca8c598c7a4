"""A persistent cache of instructor replies, so no paid request is ever sent twice.

An instruct stage sends thousands of requests; a crash, a kill or a rerun with the same
settings must not pay for them again. Each good reply is committed to SQLite in its own
transaction the moment it arrives. WAL mode makes every commit durable against a killed
process (``synchronous=NORMAL`` only risks the last commits on a power loss, which is an
acceptable price for not fsyncing the whole database per reply) and lets a second process
read while the stage writes.

The key is a sha256 over everything that determines the reply: the endpoint, the model,
the messages, the sampling parameters and a sample index (to ask the same prompt twice on
purpose). The API key is never part of the key nor of the stored record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class RequestCache:
    """sha256(request) -> reply record (a dict of InstructRecord fields)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False plus our own lock: the asyncio client uses it from one
        # thread, but the synchronous ``complete`` may be called from a thread pool.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()

    @staticmethod
    def key(
        *,
        base_url: str,
        model: str,
        messages: list[dict[str, str]],
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        sample_index: int = 0,
    ) -> str:
        payload = {
            "base_url": base_url.rstrip("/"),
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
            "response_format": response_format,
            "sample_index": sample_index,
        }
        # sort_keys + fixed separators: the same request always hashes the same.
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT record FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        text = json.dumps(record, ensure_ascii=False)
        with self._lock:
            # One transaction per reply: a kill loses at most the reply being written.
            self._conn.execute(
                "INSERT OR REPLACE INTO replies (key, record, created) VALUES (?, ?, ?)",
                (key, text, time.time()),
            )
            self._conn.commit()

    def keys(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT key FROM replies")}

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
