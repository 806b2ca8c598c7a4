"""Preflight, path resolution and the mapping of OS errors to one line (issue 17).

The table in test_bad_inputs.py drives the CLI; these tests pin the parts it cannot
show from outside: where relative paths point, what a resume after a full disk yields,
and what lai validate reports when everything is fine.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from lai.config import load_config
from lai.errors import RunDirError, user_error
from lai.preflight import check_run_files, preflight
from lai.store import atomic_write_text
from tests.helpers.forked_cli import lai_forked

REPO = Path(__file__).resolve().parents[2]
TRAIN = [{"question": f"Tom has {i} apples and buys 2 more. How many now?", "answer": f"#### {i + 2}"} for i in range(12)]
TEST = [{"question": f"Ann has {i} pens and loses 1. How many left?", "answer": f"#### {i - 1}"} for i in range(5, 8)]


def write_data(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TEST))


def fake_config(pool_path: str, bench_path: str) -> dict[str, object]:
    return {
        "name": "t",
        "target": {"backend": "scripted", "model": "m"},
        "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 4, "path": pool_path}]},
        "instructor": {"backend": "scripted"},
        "strategy": {"embedder": "hashing"},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [{"task": "gsm8k", "pool": "test", "path": bench_path}]},
    }


def test_paths_are_relative_to_the_config_file_not_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    write_data(project / "data")
    (project / "configs").mkdir()
    (project / "configs" / "base.yaml").write_text(yaml.safe_dump(fake_config("../data/train.jsonl", "../data/test.jsonl")))
    # A child in another folder: its parent's paths stay relative to the parent file.
    (project / "experiments").mkdir()
    (project / "experiments" / "more.yaml").write_text("extends: ../configs/base.yaml\nseed: 7\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(project / "experiments" / "more.yaml")
    assert cfg.select.pools[0].path == (project / "data" / "train.jsonl").resolve()
    assert cfg.evaluate.benchmarks[0].path == (project / "data" / "test.jsonl").resolve()
    # --set paths are typed in the shell: relative to the working folder.
    write_data(elsewhere / "mine")
    cfg = load_config(project / "configs" / "base.yaml", ["data_dir=mine"])
    assert cfg.data_dir == (elsewhere / "mine").resolve()
    # Hub ids and embedded names are not paths.
    cfg = load_config(project / "configs" / "base.yaml", ["target.model=org/name", "strategy.embedder=hashing"])
    assert cfg.target.model == "org/name" and cfg.strategy.embedder == "hashing"


def test_saved_config_holds_absolute_paths_and_resumes_from_anywhere(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_data(project / "data")
    (project / "c.yaml").write_text(yaml.safe_dump(fake_config("data/train.jsonl", "data/test.jsonl")))
    run = lai_forked("run", "c.yaml", "--run-dir", str(tmp_path / "run"), cwd=project)
    assert run.returncode == 0, run.stderr
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["select"]["pools"][0]["path"] == str((project / "data" / "train.jsonl").resolve())
    # Resume from another folder with only the run directory: the same files are found.
    again = lai_forked("run", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_duplicate_keys_only_within_one_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("target:\n  batch_size: 2\ninstructor:\n  backend: scripted\n  max_tokens: 2\n")
    cfg = load_config(path)  # batch_size / max_tokens in different sections are fine
    assert cfg.target.batch_size == 2 and cfg.instructor.max_tokens == 2


def test_validate_reports_free_space_rows_and_skipped_rows(tmp_path: Path) -> None:
    write_data(tmp_path / "data")
    arc = [
        {"id": "Ok_1", "question": "Q?", "A": "a", "B": "b", "answer": "B"},
        {"id": "Odd_1", "question": "Q?", "A": "only one", "answer": "A"},
    ]
    (tmp_path / "data" / "arc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arc))
    raw = fake_config(str(tmp_path / "data" / "train.jsonl"), str(tmp_path / "data" / "test.jsonl"))
    raw["evaluate"] = {"benchmarks": [{"task": "arc_challenge", "pool": "test", "path": str(tmp_path / "data" / "arc.jsonl")}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    notes = preflight(load_config(tmp_path / "c.yaml"), tmp_path / "runs" / "t")
    assert any("writable" in n and "GB free" in n for n in notes)
    assert any("arc_challenge/test: 1 row(s) it cannot read will be skipped (e.g. Odd_1" in n for n in notes)
    assert any("gsm8k/train: 12 rows, 4 drawn" in n for n in notes)
    assert not (tmp_path / "runs").exists()  # validate creates nothing


def test_os_errors_become_one_line_naming_the_path(tmp_path: Path) -> None:
    full = user_error(OSError(errno.ENOSPC, "No space left on device"))
    assert full is not None and "no space left" in str(full) and "rerun the same command" in str(full)
    assert "did not say which file" in str(full)
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(OSError) as caught:
        atomic_write_text(path / "inside.txt", "x")
    error = user_error(caught.value)
    assert error is not None and str(path) in str(error)
    assert user_error(RuntimeError("bug")) is None


def test_check_run_files_ignores_a_torn_last_line(tmp_path: Path) -> None:
    (tmp_path / "iter_01").mkdir()
    (tmp_path / "iter_01" / "collect.jsonl").write_text('{"id": "a"}\n{"id": "b"')
    check_run_files(tmp_path)  # a killed writer's tail: lai cuts it on resume
    (tmp_path / "iter_01" / "collect.jsonl").write_text('{"id": "a"}\n{"id": "b"\n')
    with pytest.raises(RunDirError, match=r"collect\.jsonl:2 is damaged"):
        check_run_files(tmp_path)


def _full_disk() -> None:
    """In the forked `lai run` only: every fsync of collect.jsonl fails as on a full disk."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("collect.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    os.fsync = fsync


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to find a descriptor's file")
def test_full_disk_is_one_line_and_a_resume_matches_a_clean_run(tmp_path: Path) -> None:
    write_data(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(fake_config("data/train.jsonl", "data/test.jsonl")))

    def lai(*args: str, before: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
        return lai_forked(*args, cwd=tmp_path, before=before)

    failed = lai("run", "c.yaml", "--run-dir", "full", before=_full_disk)
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "full/iter_01/collect.jsonl: no space left on the device" in errors[0], failed.stderr
    baseline = (tmp_path / "full" / "iter_00" / "eval" / "gsm8k-test.jsonl").read_bytes()
    # Space freed: the same command resumes and ends where a run without the fault ends.
    assert lai("run", "c.yaml", "--run-dir", "full").returncode == 0
    assert lai("run", "c.yaml", "--run-dir", "clean").returncode == 0
    assert (tmp_path / "full" / "iter_00" / "eval" / "gsm8k-test.jsonl").read_bytes() == baseline
    for name in ("iter_01/collect.jsonl", "iter_01/selection.jsonl", "iter_01/eval/gsm8k-test.jsonl"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name


def test_lai_eval_skips_an_unreadable_row_and_counts_it(tmp_path: Path) -> None:
    (tmp_path / "arc").mkdir()
    rows = [
        {"id": "Ok_1", "question": "Q?", "A": "a", "B": "b", "answer": "B"},
        {"id": "NYSEDREGENTS_2008_8_34", "question": "Q?", "1": "a", "2": "b", "3": "c", "answer": "3"},
        {"id": "Odd_1", "question": "Q?", "A": "only one", "answer": "A"},
    ]
    (tmp_path / "arc" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "400"}
    command = [sys.executable, "-m", "lai.cli", "eval", "--model", "m", "--backend", "scripted", "--tasks", "arc_challenge",
               "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tasks"]["arc_challenge"]["n"] == 2 and summary["tasks"]["arc_challenge"]["skipped"] == 1
    assert "Odd_1" in result.stderr and "skipped 1 row(s)" in result.stderr
    strict = subprocess.run([*command, "--strict", "--out", str(tmp_path / "strict")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert strict.returncode == 2 and "Odd_1" in strict.stderr and len(strict.stderr.strip().splitlines()) == 1


def test_validate_online_accepts_an_endpoint_that_lists_the_model(tmp_path: Path) -> None:
    import http.server
    import threading

    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = json.dumps({"object": "list", "data": [{"id": "teacher"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        write_data(tmp_path / "data")
        raw = fake_config("data/train.jsonl", "data/test.jsonl")
        raw["instructor"] = {"backend": "openai", "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1", "model": "teacher"}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "400"}
        result = subprocess.run(
            [sys.executable, "-m", "lai.cli", "validate", "c.yaml", "--online"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert "answers and lists teacher" in result.stderr and "ok: c.yaml" in result.stderr


def test_a_run_saved_with_relative_paths_still_resumes(tmp_path: Path) -> None:
    """Runs made before paths were saved absolute hold them relative to the working folder."""
    write_data(tmp_path / "data")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(fake_config("data/train.jsonl", "data/test.jsonl")))

    def lai(*args: str) -> subprocess.CompletedProcess[str]:
        return lai_forked(*args, cwd=tmp_path)

    assert lai("run", "c.yaml", "--run-dir", "run").returncode == 0
    saved = tmp_path / "run" / "config.yaml"
    saved.write_text(saved.read_text().replace(str(tmp_path.resolve()) + "/", ""))  # as an older lai wrote it
    assert "path: data/train.jsonl" in saved.read_text()
    again = lai("run", "c.yaml", "--run-dir", "run")
    assert again.returncode == 0, again.stderr
