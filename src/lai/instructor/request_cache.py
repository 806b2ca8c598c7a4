"""A persistent cache of instructor replies, so no paid request is ever sent twice.

An instruct stage sends thousands of requests; a crash, a kill or a rerun with the same
settings must not pay for them again. Two tables, both append-only in spirit:

* ``replies``: the final record of a request (after its corrective retry, if any), so a
  rerun that finds it sends nothing for that request;
* ``calls``: every single paid HTTP reply, keyed by the exact messages it answered, stored
  the moment it arrives. A request whose first reply needs a corrective retry therefore
  has its first reply on disk before the retry is sent, and a kill during the retry (or
  its back-off) costs at most the retry, never the first reply again.

Each row is committed in its own transaction with ``synchronous=FULL`` (WAL), i.e.
fsynced: a paid reply survives a kill and a power loss alike.

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
);
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
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
            # FULL: every commit is fsynced; a paid reply must survive a power loss too.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
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

    def get_call(self, key: str) -> dict[str, Any] | None:
        """One paid HTTP reply (reply, finish_reason, model, token counts), if ever received."""
        with self._lock:
            row = self._conn.execute("SELECT reply FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_call(self, key: str, reply: dict[str, Any]) -> None:
        text = json.dumps(reply, ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO calls (key, reply, created) VALUES (?, ?, ?)",
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
