"""Start and stop a local OpenAI-compatible instructor server (llama.cpp or vLLM) on 127.0.0.1.

llama.cpp (``llama_cpp.server``) serves a .gguf model on the CPU; vLLM
(``vllm.entrypoints.openai.api_server``, what ``vllm serve`` runs) serves an HF folder or hub
id on CUDA GPUs. Either is started with this Python unless ``instructor.local.launcher``
names another command (vLLM often lives in its own environment), and is ready once
``/v1/models`` answers.

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
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lai.config import LocalInstructorConfig
from lai.errors import InstructorError
from lai.models.resolve import embedded_gguf, resolve_model
from lai.processes import free_port, reap, stop_group

log = logging.getLogger(__name__)

ALIAS = "local-instructor"
STARTUP_TIMEOUT_S = {"llama_cpp": 120.0, "vllm": 1200.0}  # vLLM may download weights and compile first
MODULES = {"llama_cpp": "llama_cpp.server", "vllm": "vllm.entrypoints.openai.api_server"}
INSTALL_HINTS = {
    "llama_cpp": "pip install 'llama-cpp-python[server]' (make demo installs it; it builds once, ~5 min)",
    "vllm": "pip install 'lai[vllm]' (needs a CUDA GPU), or set instructor.local.launcher to a vLLM elsewhere",
}
# Secrets are not the server's business: it gets a minimal environment. vLLM also needs to
# see its GPUs and caches, and HF_TOKEN for gated weights; instructor API keys stay out.
BASE_ENV = ("PATH", "HOME", "LANG", "LD_LIBRARY_PATH")
VLLM_ENV = ("TMPDIR", "XDG_CACHE_HOME")
VLLM_ENV_PREFIXES = ("CUDA_", "NCCL_", "VLLM_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_", "TORCH_", "TRITON_")


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when lai dies, even by ``kill -9``."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1  # noqa: N806 - the kernel's name
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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


def vllm_model(spec: str) -> str:
    """What vLLM's ``--model`` gets: an embedded model's converted HF folder, a path, or a hub id."""
    if spec.startswith("embedded:"):
        return resolve_model(spec).location  # converted once into an HF folder in the cache
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def server_environment(server: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = dict(os.environ if environ is None else environ)
    keep = set(BASE_ENV)
    if server == "vllm":
        keep.update(VLLM_ENV)
        keep.update(key for key in environ if key.startswith(VLLM_ENV_PREFIXES))
    return {key: environ[key] for key in sorted(keep) if key in environ}


def launcher(config: LocalInstructorConfig) -> list[str]:
    """The command that starts the server, checked to exist when it is this Python's module."""
    if config.launcher:
        return list(config.launcher)
    if importlib.util.find_spec(MODULES[config.server].split(".")[0]) is None:
        what = "llama.cpp's server" if config.server == "llama_cpp" else "vLLM"
        raise InstructorError(f"the local instructor needs {what}, which is not installed", hint=INSTALL_HINTS[config.server])
    return [sys.executable, "-m", MODULES[config.server]]


def server_command(config: LocalInstructorConfig, port: int, model: str, start: list[str]) -> list[str]:
    """The full command line; ``model`` is already resolved (a .gguf file for llama.cpp)."""
    command = [*start, "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    if config.server == "vllm":
        command += ["--served-model-name", ALIAS, "--max-model-len", str(config.n_ctx)]
    else:
        command += ["--n_threads", str(config.n_threads), "--n_ctx", str(config.n_ctx), "--model_alias", ALIAS]
    return [*command, *config.extra_args]


def client_snippet(base_url: str, server: str) -> str:
    """The config lines (and --set overrides) that point a run at a server started elsewhere."""
    structured = "json_object" if server == "llama_cpp" else "json_schema"
    lines = [
        "instructor:",
        "  backend: openai",
        f"  base_url: {base_url}",
        f"  model: {ALIAS}",
        "  api_key_env: null",
        f"  structured_output: {structured}",
    ]
    if server == "llama_cpp":
        lines.append("  concurrency: 1                 # llama.cpp serves one request at a time")
    lines += ["  local:", "    enabled: false"]
    overrides = (
        f"--set instructor.local.enabled=false --set instructor.base_url={base_url} "
        f"--set instructor.model={ALIAS} --set instructor.api_key_env=null "
        f"--set instructor.structured_output={structured}"
    )
    return "\n".join(lines) + f"\n\nor: lai run CONFIG {overrides}"


class LocalInstructorServer:
    """Context manager: ``with LocalInstructorServer(cfg, log_path) as server: server.base_url``."""

    def __init__(self, config: LocalInstructorConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.port = config.port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.model_alias = ALIAS
        self.startup_timeout_s = config.startup_timeout_s or STARTUP_TIMEOUT_S[config.server]

    def command(self) -> list[str]:
        start = launcher(self.config)  # first: a missing server fails before any model work
        if self.config.server == "vllm":
            model = vllm_model(self.config.model)
        else:
            model = str(local_model_file(self.config.model))
        return server_command(self.config, self.port, model, start)

    def start(self) -> LocalInstructorServer:
        command = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        log.info("starting the local instructor (%s) on port %d (log: %s)", self.config.server, self.port, self.log_path)
        env = server_environment(self.config.server)
        try:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                preexec_fn=_die_with_parent,
            )
        except OSError as error:  # a launcher that does not exist or cannot run
            raise InstructorError(
                f"could not start the local instructor ({command[0]}): {error.strerror or error}",
                hint="check instructor.local.launcher",
            ) from None
        finally:
            log_file.close()
        atexit.register(self.stop)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
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
            f"the local instructor did not answer within {self.startup_timeout_s:.0f} s",
            hint=f"see {self.log_path}; raise instructor.local.startup_timeout_s on a slow machine",
        )

    def exit_code(self) -> int | None:
        """The server's exit status once it has exited, else None (also None when not started)."""
        return None if self.process is None else reap(self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        if process is not None and not stop_group(process):
            raise InstructorError(f"the local instructor server (pid {process.pid}) did not exit after SIGKILL")

    def __enter__(self) -> LocalInstructorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
