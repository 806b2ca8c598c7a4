from __future__ import annotations

import json
from pathlib import Path

from lai.store import JsonlWriter, RunStore, atomic_write_json, read_json, read_jsonl


def test_torn_last_line_is_cut_and_appending_continues(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as writer:
        writer.write([{"id": "a"}, {"id": "b"}])
    with open(path, "a") as handle:
        handle.write('{"id": "c", "half')  # what a kill -9 mid-write leaves
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    with JsonlWriter(path) as writer:
        writer.write([{"id": "c"}])
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]
    assert path.read_text().endswith("\n")


def test_writer_repairs_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id"')
    with JsonlWriter(path) as writer:
        writer.write([{"id": "b"}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_atomic_json_and_markers(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert read_json(tmp_path / "x.json") == {"a": 1}
    assert not list(tmp_path.glob(".*tmp"))
    store = RunStore(tmp_path)
    assert not store.is_done(1, "collect")
    store.mark_done(1, "collect", {"n": 3})
    assert store.is_done(1, "collect") and store.summary(1, "collect") == {"n": 3}
    assert list(store.iterations()) == [1]
