"""A run left alone overnight: one process per run dir, a clear word on Ctrl-C and SIGTERM,
no silent "done" when the endpoint fails, and only how-to-run settings change on resume.

Every process here is a real ``lai run`` (or a real lock holder) in its own process group,
signalled the way a terminal or a scheduler does it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest
import yaml

from lai import runlock
from lai.config import build_config
from lai.errors import ConfigError, InstructorError
from lai.instructor.runner import final_records
from lai.pipeline import Pipeline
from lai.store import atomic_write_text
from tests.helpers.fault_server import FaultServer

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}


def config(data_dir: Path, **changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "overnight",
        "seed": 3,
        "data_dir": str(data_dir),
        "target": {"backend": "scripted", "model": "m", "batch_size": 2},
        "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 12}]},
        "instructor": {"backend": "scripted", "model": "teacher", "concurrency": 2},
        "strategy": {"name": "le", "budget": 12, "embedder": "hashing"},
        "verify": {"resolve": {"enabled": False}},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [{"task": "gsm8k", "pool": "test", "limit": 4}], "baseline": False},
    }
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def start(tmp_path: Path, cfg: dict[str, Any], run_dir: Path) -> subprocess.Popen[str]:
    path = tmp_path / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen(
        [sys.executable, "-m", "lai.cli", "run", str(path), "--run-dir", str(run_dir)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def wait_for_stage(process: subprocess.Popen[str], run_dir: Path, stage: str, timeout: float = 120) -> None:
    """Until the manifest says ``stage`` runs (polled; the bound only guards a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            stages = {}
        if stages.get(stage, {}).get("status") == "running":
            return
        time.sleep(0.05)
    raise AssertionError(f"{stage} never started")


def slow(data_dir: Path, target: bool = True) -> dict[str, Any]:
    """Every stage takes long enough to be signalled in the middle. ``target=False``: the
    target's stages (collect) are quick, so a run reaches the instructor's in a moment."""
    return config(
        data_dir,
        target={"options": {"delay_s": 0.5 if target else 0.0}},
        instructor={"options": {"delay_s": 1.0}},
    )


@pytest.mark.parametrize(
    ("signum", "code", "stage"),
    [
        (signal.SIGINT, 130, "iter_01/collect"),
        (signal.SIGTERM, 143, "iter_01/collect"),
        (signal.SIGINT, 130, "iter_01/instruct"),
        (signal.SIGTERM, 143, "iter_01/instruct"),
    ],
)
def test_ctrl_c_and_sigterm_say_interrupted_and_exit_130_or_143(
    tmp_path: Path, data_dir: Path, signum: int, code: int, stage: str
) -> None:
    run_dir = tmp_path / "run"
    # Only the stage to signal is slow: collect's 0.5 s per row would delay instruct by seconds.
    process = start(tmp_path, slow(data_dir, target=not stage.endswith("/instruct")), run_dir)
    try:
        wait_for_stage(process, run_dir, stage)
        signalled = time.monotonic()
        os.killpg(process.pid, signum)  # the whole group, as a terminal's Ctrl-C does
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == code, err[-2000:]
    assert "interrupted: rerun the same command to resume" in err
    assert "Traceback" not in err
    assert took < 30  # honoured at once (bench: under 5 s); generous for a loaded machine
    assert not (run_dir / stage.split("/")[0] / f"{stage.split('/')[1]}.done").exists()


@pytest.mark.slow  # about 20 s: a whole second process waits on the lock
def test_a_second_process_on_the_same_run_dir_is_refused_with_the_holders_pid(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    first = start(tmp_path, slow(data_dir), run_dir)
    try:
        wait_for_stage(first, run_dir, "iter_01/collect")
        second = start(tmp_path, slow(data_dir), run_dir)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        [line] = [x for x in err.splitlines() if x.startswith("error:")]
        assert f"pid {first.pid} on host {socket.gethostname()}" in line
        assert first.poll() is None  # the first one goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # kill -9 freed the lock (the kernel holds it, not a file): a rerun resumes.
    again = start(tmp_path, slow(data_dir), run_dir)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]


def test_lock_is_reentrant_in_one_process_and_freed_by_a_kill(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from lai import runlock; runlock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)", str(tmp_path)],
        env=ENV, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunDirBusy, match=f"pid {holder.pid}"):
            runlock.acquire(tmp_path)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    key = runlock.acquire(tmp_path)
    assert runlock.acquire(tmp_path) == key  # re-entrant
    runlock.release(key)
    runlock.release(key)


class _NotFound(BaseHTTPRequestHandler):
    def _reply(self) -> None:
        body = b'{"error": {"message": "not found"}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def test_all_requests_failing_stops_the_stage_and_a_fixed_base_url_resumes_it(tmp_path: Path, data_dir: Path) -> None:
    wrong = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    Thread(target=wrong.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    wrong_url = f"http://127.0.0.1:{wrong.server_address[1]}/wrong"
    openai = {"backend": "openai", "model": "teacher", "max_retries": 1, "timeout_s": 5, "backoff_base_s": 0.01}
    run_dir = tmp_path / "run"
    try:
        with pytest.raises(InstructorError) as stopped:
            Pipeline(build_config(config(data_dir, instructor={**openai, "base_url": wrong_url})), run_dir).run()
    finally:
        wrong.shutdown()
        wrong.server_close()
    message = str(stopped.value)
    assert f"HTTP 404 from {wrong_url}: check instructor.base_url" in message and "\n" not in message
    assert not (run_dir / "iter_01" / "instruct.done").exists()
    failed = final_records(run_dir / "iter_01" / "instruct.jsonl")
    assert failed and all(r.status == "failed" for r in failed.values())

    with FaultServer() as server:  # the endpoint fixed: base_url may change on resume
        Pipeline(build_config(config(data_dir, instructor={**openai, "base_url": server.base_url})), run_dir).run()
        assert set(server.received) == set(failed)  # every failed request was sent again
    final = final_records(run_dir / "iter_01" / "instruct.jsonl")
    assert final.keys() == failed.keys() and all(r.status == "ok" for r in final.values())
    resumes = json.loads((run_dir / "manifest.json").read_text())["resumes"]
    assert resumes[-1]["changed"]["instructor.base_url"] == [wrong_url, server.base_url]


def test_how_it_runs_may_change_on_resume_what_it_is_may_not(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    Pipeline(build_config(config(data_dir, iterations=2)), run_dir).run()
    changed = config(data_dir, iterations=2, instructor={"concurrency": 5, "max_cost": 3.0, "timeout_s": 9.0})
    Pipeline(build_config(changed), run_dir).run()
    [resume] = json.loads((run_dir / "manifest.json").read_text())["resumes"]
    assert resume["changed"] == {
        "instructor.concurrency": [2, 5], "instructor.max_cost": [None, 3.0], "instructor.timeout_s": [180.0, 9.0],
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"differs in: instructor\.model, strategy"):
        Pipeline(build_config(config(data_dir, iterations=2, instructor={"model": "other"}, strategy={"budget": 99})), run_dir)
    with pytest.raises(ConfigError, match="iterations cannot shrink"):
        Pipeline(build_config(config(data_dir, iterations=1)), run_dir)
    Pipeline(build_config(config(data_dir, iterations=3)), run_dir)  # growing is fine


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.md", "hello\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == mode


def test_sigterm_while_the_endpoint_hangs_stops_at_once_and_keeps_the_books(tmp_path: Path, data_dir: Path) -> None:
    """Requests stuck on a server that does not answer (timeout_s 120) do not hold SIGTERM up."""
    run_dir = tmp_path / "run"
    with FaultServer(fault_rate=1.0, faults=("timeout",), hang_s=60) as server:
        instructor = {"backend": "openai", "base_url": server.base_url, "model": "teacher", "timeout_s": 120}
        process = start(tmp_path, config(data_dir, instructor=instructor), run_dir)
        try:
            wait_for_stage(process, run_dir, "iter_01/instruct")
            deadline = time.monotonic() + 60
            while server.total_received < 2 and time.monotonic() < deadline:  # on the wire
                time.sleep(0.05)
            signalled = time.monotonic()
            os.killpg(process.pid, signal.SIGTERM)
            _, err = process.communicate(timeout=60)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode == 143 and "interrupted: rerun the same command to resume" in err, err[-2000:]
    assert took < 20  # not the 60 s hang nor the 120 s timeout
    assert not (run_dir / "iter_01" / "instruct.done").exists()
