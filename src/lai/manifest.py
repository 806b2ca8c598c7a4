"""The run manifest: what ran, with which versions, seeds and models, and how long it took."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
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


class Manifest:
    """A JSON file rewritten atomically after every change."""

    def __init__(self, path: Path, *, seed: int, config_text: str) -> None:
        self.path = path
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
        self.data["updated"] = now()
        atomic_write_json(self.path, self.data)

    def stage(self, key: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(key, {"status": "pending", "seconds": 0.0, "attempts": 0})

    def stage_started(self, key: str) -> None:
        entry = self.stage(key)
        entry["status"] = "running"
        entry["attempts"] += 1
        entry.setdefault("started", now())
        self.save()

    def stage_finished(self, key: str, seconds: float) -> None:
        entry = self.stage(key)
        entry["status"] = "done"
        entry["seconds"] = round(entry["seconds"] + seconds, 2)
        entry["finished"] = now()
        self.save()

    def stage_failed(self, key: str, seconds: float, error: str) -> None:
        entry = self.stage(key)
        entry["status"] = "failed"
        entry["seconds"] = round(entry["seconds"] + seconds, 2)
        entry["error"] = error[:500]
        self.save()

    def record_model(self, iteration: int, model: str, fingerprint: str) -> None:
        self.data["models"][f"iter_{iteration:02d}"] = {"model": model, "fingerprint": fingerprint}
        self.save()

    def record_resume(self, changes: dict[str, list[Any]]) -> None:
        """A resume that changed how the run is carried out (lai.resume): when, and what.

        The values are config values (api_key_env is a variable's name, never a key)."""
        with self._lock:
            self.data.setdefault("resumes", []).append({"time": now(), "changed": changes})
            self.save()

    def record_template(self, name: str, digest: str) -> None:
        if self.data["templates"].get(name) != digest:
            self.data["templates"][name] = digest
            self.save()
