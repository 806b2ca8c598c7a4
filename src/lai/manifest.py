"""The run manifest: what ran, with which versions, seeds and models, and how long it took."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from lai import __version__
from lai.store import atomic_write_json, read_json

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "openai", "pydantic", "llama_cpp_python")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return versions


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


#: Seconds between two heartbeats of a running stage: at most this much of an attempt
#: killed without warning (kill -9, power loss) goes uncounted.
HEARTBEAT_S = 5.0


class Manifest:
    """A JSON file rewritten atomically after every change.

    Stage times count every attempt. A stage that fails records its time as it stops,
    but one killed with ``kill -9`` cannot, so while a stage runs a heartbeat thread
    writes its elapsed seconds into ``stages[key]["running"]`` every :data:`HEARTBEAT_S`
    seconds; the next attempt finds that entry, books it as a killed attempt, and adds
    its seconds. ``seconds`` is the total of all attempts, ``attempts`` their number,
    and ``history`` one line per attempt (started, seconds, outcome).
    """

    def __init__(self, path: Path, *, seed: int, config_text: str, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = path
        self.heartbeat_s = heartbeat_s
        self._lock = threading.RLock()
        self._beats: dict[str, tuple[threading.Event, threading.Thread]] = {}
        self.data: dict[str, Any] = read_json(path, default=None) or {
            "lai_version": __version__,
            "created": now(),
            "seed": seed,
            "config_sha256": hashlib.sha256(config_text.encode()).hexdigest()[:16],
            "stages": {},
            "models": {},
            "templates": {},
        }
        self.data["python"] = platform.python_version()
        self.data["packages"] = package_versions()
        self.save()

    def save(self) -> None:
        with self._lock:
            self.data["updated"] = now()
            atomic_write_json(self.path, self.data)

    def stage(self, key: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(key, {"status": "pending", "seconds": 0.0, "attempts": 0})

    def stage_started(self, key: str) -> None:
        with self._lock:
            entry = self.stage(key)
            self._book_killed(entry)
            entry["status"] = "running"
            entry["attempts"] += 1
            entry.setdefault("started", now())
            entry["running"] = {"started": now(), "seconds": 0.0}
            self.save()
        self._start_heartbeat(key)

    def stage_settled(self, key: str) -> None:
        """A stage found done on disk: an attempt killed after its marker but before its
        manifest entry still counts, and the entry says done."""
        with self._lock:
            entry = self.data["stages"].get(key)
            if entry is None or (entry.get("status") == "done" and "running" not in entry):
                return
            self._book_killed(entry)
            entry["status"] = "done"
            self.save()

    def _book_killed(self, entry: dict[str, Any]) -> None:
        """An attempt that left its heartbeat behind died without a word: count its time."""
        running = entry.pop("running", None)
        if not isinstance(running, dict):
            return
        seconds = float(running.get("seconds", 0.0))
        entry["seconds"] = round(float(entry.get("seconds", 0.0)) + seconds, 2)
        entry.setdefault("history", []).append(
            {"started": running.get("started"), "seconds": round(seconds, 2), "outcome": "killed"}
        )

    def _start_heartbeat(self, key: str) -> None:
        stop = threading.Event()
        started = time.monotonic()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                with self._lock:
                    running = self.stage(key).get("running")
                    if stop.is_set() or not isinstance(running, dict):
                        return
                    running["seconds"] = round(time.monotonic() - started, 2)
                    self.save()

        thread = threading.Thread(target=beat, name=f"manifest-heartbeat {key}", daemon=True)
        self._beats[key] = (stop, thread)
        thread.start()

    def _end_attempt(self, key: str, seconds: float, outcome: str) -> dict[str, Any]:
        beat = self._beats.pop(key, None)
        if beat is not None:
            beat[0].set()
        entry = self.stage(key)
        running = entry.pop("running", None) or {}
        entry["seconds"] = round(float(entry.get("seconds", 0.0)) + seconds, 2)
        entry.setdefault("history", []).append(
            {"started": running.get("started"), "seconds": round(seconds, 2), "outcome": outcome}
        )
        return entry

    def stage_finished(self, key: str, seconds: float) -> None:
        with self._lock:
            entry = self._end_attempt(key, seconds, "done")
            entry["status"] = "done"
            entry["finished"] = now()
            self.save()

    def stage_failed(self, key: str, seconds: float, error: str) -> None:
        with self._lock:
            entry = self._end_attempt(key, seconds, "failed")
            entry["status"] = "failed"
            entry["error"] = error[:500]
            self.save()

    def record_model(self, iteration: int, model: str, fingerprint: str) -> None:
        with self._lock:
            self.data["models"][f"iter_{iteration:02d}"] = {"model": model, "fingerprint": fingerprint}
            self.save()

    def record_resume(self, changes: dict[str, list[Any]]) -> None:
        """A resume that changed how the run is carried out (lai.resume): when, and what.

        The values are config values (api_key_env is a variable's name, never a key)."""
        with self._lock:
            self.data.setdefault("resumes", []).append({"time": now(), "changed": changes})
            self.save()

    def record_template(self, name: str, digest: str) -> None:
        with self._lock:
            if self.data["templates"].get(name) != digest:
                self.data["templates"][name] = digest
                self.save()
