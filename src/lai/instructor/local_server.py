"""Start and stop a local OpenAI-compatible instructor server (llama.cpp) on 127.0.0.1.

The server runs in its own process group so stopping it (SIGTERM, then SIGKILL after a
grace period) also ends any children; an ``atexit`` hook stops it if lai dies of an
exception, and on Linux the kernel sends it SIGTERM when lai dies of anything, ``kill -9``
included (``PR_SET_PDEATHSIG``), so no orphaned server holds the port or the CPU.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lai.config import LocalInstructorConfig
from lai.errors import InstructorError
from lai.models.resolve import embedded_gguf

log = logging.getLogger(__name__)

ALIAS = "local-instructor"


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when lai dies, even by ``kill -9``."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1  # noqa: N806 - the kernel's name
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_model_file(spec: str) -> Path:
    if spec.startswith("embedded:"):
        return embedded_gguf(spec.removeprefix("embedded:"))
    path = Path(spec).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise InstructorError(
            f"the local instructor needs a .gguf file, got {spec}",
            hint="set instructor.local.model to embedded:smollm2-135m-instruct or a .gguf path",
        )
    return path


class LocalInstructorServer:
    """Context manager: ``with LocalInstructorServer(cfg, log_path) as server: server.base_url``."""

    def __init__(self, config: LocalInstructorConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = config.port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.model_alias = ALIAS

    def start(self) -> LocalInstructorServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise InstructorError(
                "the local instructor needs llama.cpp's server, which is not installed",
                hint="pip install 'llama-cpp-python[server]' (make demo installs it; it builds once, ~5 min)",
            )
        model_file = local_model_file(self.config.model)
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_file),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_threads", str(self.config.n_threads),
            "--n_ctx", str(self.config.n_ctx),
            "--model_alias", ALIAS,
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        log.info("starting the local instructor on port %d (log: %s)", self.port, self.log_path)
        # Secrets are not the server's business: it gets a minimal environment.
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LD_LIBRARY_PATH") if key in os.environ}
        self.process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
        log_file.close()
        atexit.register(self.stop)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-500:]
                raise InstructorError(f"the local instructor server exited at start-up: ...{tail.strip()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise InstructorError(
            f"the local instructor did not answer within {self.config.startup_timeout_s:.0f} s",
            hint=f"see {self.log_path}; raise instructor.local.startup_timeout_s on a slow machine",
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalInstructorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
