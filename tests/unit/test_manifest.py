"""Stage times count every attempt, also one killed without warning (issue 18, item 4)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lai.manifest import Manifest


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_killed_attempt_is_booked_with_its_last_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest = Manifest(path, seed=1, config_text="x")
    manifest.stage_started("iter_00/evaluate")
    manifest._beats.pop("iter_00/evaluate")[0].set()  # stop the heartbeat as kill -9 would
    # What a kill -9 leaves behind: status running, the heartbeat's last count of seconds.
    data = read(path)
    data["stages"]["iter_00/evaluate"]["running"]["seconds"] = 300.0
    path.write_text(json.dumps(data))

    again = Manifest(path, seed=1, config_text="x")
    again.stage_started("iter_00/evaluate")
    again.stage_failed("iter_00/evaluate", 200.0, "KeyboardInterrupt: ")
    third = Manifest(path, seed=1, config_text="x")
    third.stage_started("iter_00/evaluate")
    third.stage_finished("iter_00/evaluate", 86.0)

    entry = read(path)["stages"]["iter_00/evaluate"]
    assert entry["status"] == "done" and entry["attempts"] == 3
    assert [a["outcome"] for a in entry["history"]] == ["killed", "failed", "done"]
    assert entry["seconds"] == 586.0 == sum(a["seconds"] for a in entry["history"])
    assert "running" not in entry


def test_the_heartbeat_writes_the_running_seconds(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest = Manifest(path, seed=1, config_text="x", heartbeat_s=0.01)
    manifest.stage_started("iter_01/train")
    deadline = time.monotonic() + 30
    while read(path)["stages"]["iter_01/train"]["running"]["seconds"] == 0.0:
        assert time.monotonic() < deadline, "no heartbeat in 30 s"
        time.sleep(0.01)
    manifest.stage_finished("iter_01/train", 1.5)
    entry = read(path)["stages"]["iter_01/train"]
    assert entry["seconds"] == 1.5 and entry["history"][0]["outcome"] == "done" and "running" not in entry
    assert not manifest._beats  # the heartbeat thread was told to stop
