"""Start and stop a local OpenAI-compatible instructor server (llama.cpp or vLLM) on 127.0.0.1.

llama.cpp (``llama_cpp.server``) serves a .gguf model on the CPU; vLLM
(``vllm.entrypoints.openai.api_server``, what ``vllm serve`` runs) serves an HF folder or hub
id on CUDA GPUs. Either is started with this Python unless ``instructor.local.launcher``
names another command (vLLM often lives in its own environment), and is ready once
``/v1/models`` answers.

The server runs in its own process group so stopping it (SIGTERM, then SIGKILL after a
grace period) also ends any children; an ``atexit`` hook stops it if lai dies of an
exception, and on Linux the kernel signals it when lai dies of anything, ``kill -9``
included (``PR_SET_PDEATHSIG``), so no orphaned server holds the port or the CPU:
SIGKILL for llama.cpp, which has nothing to save and would otherwise finish the dead
client's reply first (12 s at full CPU, measured), SIGTERM for vLLM, which stops its GPU
workers on the way out.

Busy machines: llama.cpp's OpenMP threads spin-wait by default, and with one CPU-bound
neighbour on 2 cores that took decoding from ~147 to 0.4 tokens/s (bench/README.md,
"Busy machines"). The server therefore gets a short OpenMP spin count
(:func:`lai.processes.short_openmp_spins`, unless the user's environment chooses a wait
policy) and, by default, one thread less than the CPUs this process may really use
(:func:`lai.processes.usable_cpus`: affinity mask and cgroup quota; see :func:`server_threads`).

A server that dies is named, not guessed at: :meth:`LocalInstructorServer.death` says how
(exit status or signal) and quotes its log's last meaningful line; llama.cpp is also sent
one prompt of a few hundred tokens at start, since a build for the wrong CPU survives a
short prompt and dies on the first long one.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lai.config import LocalInstructorConfig
from lai.errors import InstructorError, LaiError
from lai.locate import embedded_gguf, locate_model
from lai.processes import death_notice, free_port, reap, short_openmp_spins, stop_group, usable_cpus

log = logging.getLogger(__name__)
T = TypeVar("T")

ALIAS = "local-instructor"
STARTUP_TIMEOUT_S = {"llama_cpp": 120.0, "vllm": 1200.0}  # vLLM may download weights and compile first
MODULES = {"llama_cpp": "llama_cpp.server", "vllm": "vllm.entrypoints.openai.api_server"}
INSTALL_HINTS = {
    "llama_cpp": "pip install 'llama-cpp-python[server]' (make demo installs it; it builds once, ~5 min)",
    "vllm": "pip install 'lai[vllm]' (needs a CUDA GPU), or set instructor.local.launcher to a vLLM elsewhere",
}
# Secrets are not the server's business: it gets a minimal environment. vLLM also needs to
# see its GPUs and caches, and HF_TOKEN for gated weights; instructor API keys stay out.
BASE_ENV = ("PATH", "HOME", "LANG", "LD_LIBRARY_PATH", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
# llama.cpp's server is killed outright when lai dies; vLLM is asked to stop (it has GPU workers).
DEATH_SIGNAL = {"llama_cpp": signal.SIGKILL, "vllm": signal.SIGTERM}
TERM_WAIT_S = {"llama_cpp": 3.0, "vllm": 10.0}
# A prompt of ~300 tokens: long enough to run the matrix kernels a one-token prompt skips.
WARM_UP_PROMPT = " ".join(f"Step {i}: add {i} apples to the basket and count them again." for i in range(1, 26))
VLLM_ENV = ("TMPDIR", "XDG_CACHE_HOME")
VLLM_ENV_PREFIXES = ("CUDA_", "NCCL_", "VLLM_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_", "TORCH_", "TRITON_")


def _die_with_parent(sig: int = signal.SIGTERM) -> Any:
    """A ``preexec_fn``: in the child, ask Linux to send ``sig`` when lai dies, even by ``kill -9``."""

    def arm() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            PR_SET_PDEATHSIG = 1  # noqa: N806 - the kernel's name
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return arm


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
        return locate_model(spec).location  # converted once into an HF folder in the cache
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def server_environment(server: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = dict(os.environ if environ is None else environ)
    short_openmp_spins(environ)  # idle threads sleep soon instead of spinning (a busy machine)
    keep = set(BASE_ENV)
    if server == "vllm":
        keep.update(VLLM_ENV)
        keep.update(key for key in environ if key.startswith(VLLM_ENV_PREFIXES))
    return {key: environ[key] for key in sorted(keep) if key in environ}


def server_threads(config: LocalInstructorConfig) -> int:
    """llama.cpp's thread count: the config's, else one less than the CPUs lai may really use.

    One CPU is left over because llama.cpp's threads meet at a barrier hundreds of times per
    token: if one of them shares a core with anything else (a neighbour, lai itself), all
    wait for it. On 2 CPUs beside one busy process, 2 threads decoded 31-81 tokens/s from
    run to run and 1 thread 95-141, against 72-163 and 130-146 idle (bench/README.md, "Busy
    machines"); on a bigger machine, N-1 threads still fit beside one neighbour.
    """
    return config.n_threads or max(1, usable_cpus() - 1)


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
        command += ["--n_threads", str(server_threads(config)), "--n_ctx", str(config.n_ctx), "--model_alias", ALIAS]
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
        self.restarts = 0

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
                preexec_fn=_die_with_parent(DEATH_SIGNAL[self.config.server]),
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
        if self.config.server == "llama_cpp" and not self.config.launcher:
            self._warm_up()
        return self

    def death(self, wait_s: float = 0.0) -> str | None:
        """One line saying how the server died and what its log last said; None while it runs.

        ``wait_s``: how long to give a server that may be dying (a client can see the
        connection drop a moment before the process is gone).
        """
        process = self.process
        if process is None or (code := reap(process, timeout_s=wait_s)) is None:
            return None
        return death_notice(f"the local instructor server ({self.config.server})", process, code, self.log_path)

    def restart(self) -> None:
        """Start a dead server again on the same port (the pipeline allows this once per stage)."""
        self.stop()
        self.restarts += 1
        log.warning("restarting the local instructor server (restart %d)", self.restarts)
        self.start()

    def _raise_if_dead(self, when: str) -> None:
        if (notice := self.death()) is not None:
            self.stop()
            raise InstructorError(f"{notice} ({when})", hint=self._hint())

    def _hint(self) -> str:
        if self.config.server == "llama_cpp":
            return "a SIGILL means llama-cpp-python was built for the wrong CPU: rerun scripts/build-llama-cpp.sh .venv/bin/pip"
        return f"see {self.log_path}"

    def _warm_up(self) -> None:
        """Send one prompt of a few hundred tokens, so a build that cannot run here fails now, clearly."""
        body = json.dumps({"model": ALIAS, "prompt": WARM_UP_PROMPT, "max_tokens": 1, "temperature": 0}).encode()
        request = urllib.request.Request(f"{self.base_url}/completions", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=max(30.0, self.startup_timeout_s)) as reply:
                reply.read()
        except (urllib.error.URLError, OSError) as error:
            time.sleep(0.5)  # let a crashing server finish dying, so its status is known
            self._raise_if_dead("on its first prompt")
            log.warning("the local instructor's warm-up prompt failed (%s); going on", error)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            self._raise_if_dead("at start-up")
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
        if process is not None and not stop_group(process, term_wait_s=TERM_WAIT_S[self.config.server]):
            raise InstructorError(f"the local instructor server (pid {process.pid}) did not exit after SIGKILL")

    def __enter__(self) -> LocalInstructorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def supervised(server: LocalInstructorServer | None, work: Callable[[], T]) -> T:
    """Run ``work``; if it fails because the local server died, say so, restart it once, run again.

    ``work`` must be resumable (the stage runner sends only requests without a record), so
    the second call picks up where the first stopped. A second death in the same stage
    stops the run with the server's own account of it: exit status or signal, log path,
    and its log's last meaningful line, instead of "endpoint unreachable".
    """
    restarted = False
    while True:
        try:
            return work()
        except LaiError as error:
            notice = server.death(wait_s=5.0) if server is not None else None
            if server is None or notice is None:
                raise
            if restarted:
                server.stop()
                raise InstructorError(f"{notice}; it died again after a restart", hint=server._hint()) from None
            log.warning("%s; restarting it once (%s)", notice, error)
            server.restart()
            restarted = True
