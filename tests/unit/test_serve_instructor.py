"""The vLLM instructor server: its command line, and its lifecycle through ``lai serve-instructor``.

vLLM needs a CUDA GPU, so the lifecycle runs with ``instructor.local.launcher`` (``--launcher``)
pointed at tests/helpers/fake_vllm_server.py, a stand-in that takes vLLM's flags and serves
the OpenAI API: everything lai does (command line, minimal environment, process group,
readiness wait on /v1/models, stop on Ctrl-C and SIGTERM, death with lai on kill -9) is
real; only the model behind the port is not. The same command with llama.cpp and the
embedded model runs for real in the slow test at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from lai.config import LocalInstructorConfig, build_config
from lai.errors import InstructorError
from lai.instructor import local_server
from lai.instructor.local_server import (
    ALIAS,
    LocalInstructorServer,
    client_snippet,
    server_command,
    server_environment,
)
from tests.unit.test_cli import assert_clean_error, lai

REPO = Path(__file__).resolve().parents[2]
STAND_IN = REPO / "tests" / "helpers" / "fake_vllm_server.py"
#: The slow tier's rule: a test that starts a server process (here the vLLM stand-in, about
#: 0.5-2 s with its readiness wait and stop) runs in `make test`, not in the fast tier.
SERVER_PROCESS = pytest.mark.slow


def test_vllm_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        local_server.importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real_find_spec(name, *a)
    )
    config = LocalInstructorConfig(
        enabled=True, server="vllm", model="Qwen/Qwen2.5-7B-Instruct", port=8123, n_ctx=8192,
        extra_args=["--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.85"],
    )  # fmt: skip
    server = LocalInstructorServer(config, tmp_path / "log")
    assert server.command() == [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", "Qwen/Qwen2.5-7B-Instruct",
        "--host", "127.0.0.1",
        "--port", "8123",
        "--served-model-name", ALIAS,
        "--max-model-len", "8192",
        "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.85",
    ]  # fmt: skip
    assert server.base_url == "http://127.0.0.1:8123/v1" and server.startup_timeout_s == 1200
    # A local folder goes in as an absolute path; a launcher replaces the module; llama.cpp is unchanged.
    (tmp_path / "model").mkdir()
    custom = config.model_copy(update={"model": str(tmp_path / "model"), "launcher": ["/opt/vllm/bin/vllm", "serve"]})
    assert LocalInstructorServer(custom, tmp_path / "log").command()[:4] == ["/opt/vllm/bin/vllm", "serve", "--model", str(tmp_path / "model")]
    llama = LocalInstructorConfig(port=8124, n_threads=3)
    assert server_command(llama, 8124, "/m.gguf", ["py", "-m", "llama_cpp.server"]) == [
        "py", "-m", "llama_cpp.server", "--model", "/m.gguf", "--host", "127.0.0.1", "--port", "8124",
        "--n_threads", "3", "--n_ctx", "4096", "--model_alias", ALIAS,
    ]  # fmt: skip
    assert LocalInstructorServer(llama, tmp_path / "log").startup_timeout_s == 120


def test_server_environment_keeps_gpu_and_cache_settings_not_api_keys() -> None:
    environ = {
        "PATH": "/bin", "HOME": "/h", "OPENAI_API_KEY": "sk-x", "AWS_SECRET_ACCESS_KEY": "x",
        "CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/hf", "HF_TOKEN": "hf_x", "VLLM_USE_V1": "1", "NCCL_DEBUG": "WARN",
    }  # fmt: skip
    assert server_environment("vllm", environ) == {
        "PATH": "/bin", "HOME": "/h", "CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/hf", "HF_TOKEN": "hf_x",
        "VLLM_USE_V1": "1", "NCCL_DEBUG": "WARN", "GOMP_SPINCOUNT": "1000",
    }  # fmt: skip
    # Idle OpenMP threads sleep soon instead of spinning (a busy machine), unless the user chose.
    assert server_environment("llama_cpp", environ) == {"PATH": "/bin", "HOME": "/h", "GOMP_SPINCOUNT": "1000"}
    chosen = server_environment("llama_cpp", {**environ, "OMP_WAIT_POLICY": "ACTIVE"})
    assert chosen["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in chosen


@pytest.mark.parametrize("server", ["vllm", "llama_cpp"])
def test_printed_snippet_is_a_valid_config(server: str) -> None:
    snippet, _, overrides = client_snippet("http://127.0.0.1:8000/v1", server).partition("\n\nor: ")
    config = build_config({**yaml.safe_load(snippet), "train": {"backend": "noop"}})
    assert config.instructor.base_url == "http://127.0.0.1:8000/v1" and config.instructor.model == ALIAS
    assert not config.instructor.local.enabled and config.instructor.api_key_env is None
    assert config.instructor.structured_output == ("json_schema" if server == "vllm" else "json_object")
    assert overrides.startswith("lai run CONFIG --set instructor.local.enabled=false")


def test_missing_launcher_is_an_instructor_error(tmp_path: Path) -> None:
    config = LocalInstructorConfig(enabled=True, server="vllm", model="org/m", launcher=[str(tmp_path / "nope")])
    with pytest.raises(InstructorError, match="could not start"):
        LocalInstructorServer(config, tmp_path / "log").start()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_serve_instructor_without_vllm_exits_2(tmp_path: Path) -> None:
    result = lai("serve-instructor", "Qwen/Qwen2.5-0.5B-Instruct", "--server", "vllm", "--log", str(tmp_path / "log"))
    assert_clean_error(result, "needs vLLM", "pip install 'lai[vllm]'")
    assert_clean_error(lai("serve-instructor", "m", "--server", "tgi"), "server: Input should be 'llama_cpp' or 'vllm'")


@SERVER_PROCESS
def test_stand_in_server_through_the_context_manager(tmp_path: Path) -> None:
    """The class the pipeline uses: start, answer through the OpenAI client, stop."""
    from openai import OpenAI

    record = tmp_path / "record.json"
    config = LocalInstructorConfig(
        enabled=True, server="vllm", model="org/model", launcher=[sys.executable, str(STAND_IN)],
        extra_args=["--record", str(record), "--enable-prefix-caching"], startup_timeout_s=30,
    )  # fmt: skip
    with LocalInstructorServer(config, tmp_path / "server.log") as server:
        process = server.process
        client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == [ALIAS]
        reply = client.chat.completions.create(model=server.model_alias, messages=[{"role": "user", "content": "hi"}])
        assert "stand-in" in (reply.choices[0].message.content or "")
        argv = json.loads(record.read_text())["argv"]
    assert process is not None and process.poll() is not None, "the server must be stopped"
    assert argv[argv.index("--served-model-name") + 1] == ALIAS and argv[-1] == "--enable-prefix-caching"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--max-model-len") + 1] == "4096"


@SERVER_PROCESS
def test_stop_reaps_the_server_even_when_popens_wait_lock_is_stuck(tmp_path: Path) -> None:
    """A Ctrl-C landing inside Popen.poll can leave Popen's private waitpid lock held; after
    that every Popen.wait(timeout) times out although the child is dead (a CI failure of
    `lai serve-instructor`). Holding the lock by hand reproduces that state exactly."""
    config = LocalInstructorConfig(
        enabled=True, server="vllm", model="org/model", launcher=[sys.executable, str(STAND_IN)], startup_timeout_s=30,
    )  # fmt: skip
    server = LocalInstructorServer(config, tmp_path / "server.log").start()
    process = server.process
    assert process is not None
    assert process._waitpid_lock.acquire(blocking=False)  # the state an interrupted poll leaves behind
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)  # what stop() used to rely on
    assert server.exit_code() is None
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10, "stop waited for a timeout instead of reaping the server"
    assert process.returncode == -signal.SIGTERM and _gone(process.pid)


# ---- lai serve-instructor, in the foreground ------------------------------------------


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}  # a zombie nobody reaped yet is dead too


def _wait(predicate: Any, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class ServeInstructor:
    """``lai serve-instructor ...`` as a child process; waits for the printed base_url.

    Every instance is SIGKILLed at the end of its test (the ``serving`` list below), so a
    test that fails or times out on a busy machine leaves no lai and, through
    PR_SET_PDEATHSIG, no server behind.
    """

    started: list[subprocess.Popen[str]] = []

    def __init__(self, tmp_path: Path, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200", "OPENAI_API_KEY": "sk-never-passed-on", "CUDA_VISIBLE_DEVICES": "7"}
        self.stderr = tmp_path / "stderr.txt"
        with open(self.stderr, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lai.cli", "serve-instructor", *args],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=tmp_path,
            )  # fmt: skip
        ServeInstructor.started.append(self.process)
        assert self.process.stdout is not None
        self.lines = []
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("model:"):
                break
        assert self.lines and self.lines[0].startswith("base_url: "), self.stderr.read_text()
        self.base_url = self.lines[0].split()[1]

    def models(self) -> list[str]:
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as reply:
            return [m["id"] for m in json.load(reply)["data"]]

    def finish(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=120)  # generous: the suite must pass beside a CPU-bound neighbour


@pytest.fixture(autouse=True)
def _kill_what_the_test_started() -> Any:
    yield
    while ServeInstructor.started:
        process = ServeInstructor.started.pop()
        if process.poll() is None:
            process.kill()
        process.wait()


def _stand_in(tmp_path: Path) -> tuple[ServeInstructor, dict[str, Any]]:
    record = tmp_path / "record.json"
    serving = ServeInstructor(
        tmp_path, "org/model", "--server", "vllm", "--port", "0", "--n-ctx", "2048", "--log", str(tmp_path / "server.log"),
        "--launcher", f"{sys.executable} {STAND_IN}", "--", "--record", str(record), "--tensor-parallel-size", "2",
    )  # fmt: skip
    return serving, json.loads(record.read_text())


@SERVER_PROCESS
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_instructor_serves_until_ctrl_c_or_sigterm(tmp_path: Path, signum: int) -> None:
    serving, record = _stand_in(tmp_path)
    assert serving.models() == [ALIAS]
    argv = record["argv"]
    assert argv[argv.index("--max-model-len") + 1] == "2048" and argv[-2:] == ["--tensor-parallel-size", "2"]
    assert "CUDA_VISIBLE_DEVICES" in record["env"] and "OPENAI_API_KEY" not in record["env"]
    code = serving.finish(signum)
    printed = "".join(serving.lines) + (serving.process.stdout.read() if serving.process.stdout else "")
    assert f"model: {ALIAS}" in printed
    assert f"base_url: {serving.base_url}" in printed and "structured_output: json_schema" in printed
    assert code == (0 if signum == signal.SIGINT else 128 + signal.SIGTERM), serving.stderr.read_text()
    assert _wait(lambda: _gone(record["pid"])), "the server outlived lai serve-instructor"
    assert "Traceback" not in serving.stderr.read_text()


@SERVER_PROCESS
def test_the_server_dies_with_lai_even_on_kill_9(tmp_path: Path) -> None:
    serving, record = _stand_in(tmp_path)
    assert serving.models() == [ALIAS]
    assert serving.finish(signal.SIGKILL) == -signal.SIGKILL
    assert _wait(lambda: _gone(record["pid"])), "PR_SET_PDEATHSIG did not stop the server"


@SERVER_PROCESS
def test_a_server_that_dies_is_reported(tmp_path: Path) -> None:
    serving, record = _stand_in(tmp_path)
    os.kill(record["pid"], signal.SIGKILL)
    assert serving.process.wait(timeout=30) == 2
    assert "stopped on its own" in serving.stderr.read_text()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python[server] not installed")
def test_serve_instructor_with_llama_cpp_and_the_embedded_model(tmp_path: Path) -> None:
    serving = ServeInstructor(tmp_path, "embedded:smollm2-135m-instruct", "--port", "0", "--log", str(tmp_path / "server.log"))
    assert serving.models() == [ALIAS]
    assert serving.finish(signal.SIGTERM) == 128 + signal.SIGTERM
    with pytest.raises(OSError):
        serving.models()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python[server] not installed")
def test_llama_cpp_dies_at_once_with_lai_even_mid_reply(tmp_path: Path) -> None:
    """kill -9 of lai while llama.cpp is writing a long reply: the server is gone at once
    (PR_SET_PDEATHSIG with SIGKILL), not after finishing the dead client's reply (12 s of
    full CPU before, with SIGTERM)."""
    import threading

    from tests.helpers.leftovers import descendants

    serving = ServeInstructor(tmp_path, "embedded:smollm2-135m-instruct", "--port", "0", "--log", str(tmp_path / "server.log"))
    (server_pid,) = descendants(serving.process.pid)
    body = json.dumps({
        "model": ALIAS, "prompt": "Tell a very long story.", "max_tokens": 2000, "temperature": 0,
        "logit_bias": {"0": -100, "1": -100, "2": -100},
    }).encode()  # fmt: skip
    request = urllib.request.Request(f"{serving.base_url}/completions", data=body, headers={"Content-Type": "application/json"})
    threading.Thread(target=lambda: _ignore_errors(lambda: urllib.request.urlopen(request, timeout=120).read()), daemon=True).start()
    time.sleep(2)  # the reply is being written
    assert not _gone(server_pid)
    serving.process.kill()
    started = time.monotonic()
    assert _wait(lambda: _gone(server_pid), seconds=30)
    # The bound is generous for a busy machine; the measured time is near zero.
    assert time.monotonic() - started < 10


def _ignore_errors(call: Any) -> None:
    with contextlib.suppress(Exception):  # the server is killed under this request on purpose
        call()
