"""Multi-process training: ``accelerate launch`` around ``python -m lai.train.sft SPEC``.

The parent (the ``train`` stage) writes two files into the iteration's train folder:

* ``accelerate_config.yaml``: the distributed mode (:mod:`lai.train.accelerate_configs`);
* ``launch_spec.json``: the model, the examples, the train config and the seed;

then runs ``python -m accelerate.commands.launch --config_file ... -m lai.train.sft
launch_spec.json``, copies every line the workers print into ``train.log``, and waits.
Each worker trains (:func:`lai.train.sft.main`, which runs ``run_training`` with ``launched=True``); the main
process writes ``model/`` (renamed into place when complete), ``adapter/``,
``log_history.jsonl`` and ``train_summary.json``, which the parent returns. A non-zero
exit becomes one :class:`~lai.train.base.TrainError` line naming the log file.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lai.config import TrainConfig
from lai.processes import describe_exit, free_port, stop_group, usable_cpus
from lai.train.base import SUMMARY_FILE, TrainError, TrainExample

log = logging.getLogger(__name__)

ERROR_MARK = "LAI-ERROR: "
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)):\s*(.*)$")
_WRAPPER_ERRORS = {"ChildFailedError", "CalledProcessError"}


def launch_distributed(
    cfg: TrainConfig, seed: int, model: str, examples: list[TrainExample], out_dir: Path
) -> dict[str, Any]:
    """Run the training in ``cfg.num_processes`` workers and return the main worker's summary."""
    from lai.locate import locate_model
    from lai.train.accelerate_configs import (
        accelerate_config,
        cuda_devices,
        render_yaml,
        resolve_precision,
    )
    # Resolved once here: a missing model fails before any worker starts, and N workers
    # never race to convert an embedded GGUF into the same cache folder.
    source = locate_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_cpu = cuda_devices() == 0
    precision = resolve_precision(cfg.precision, not use_cpu)
    config_path = out_dir / "accelerate_config.yaml"
    config_path.write_text(render_yaml(accelerate_config(cfg, precision, use_cpu, free_port())))
    spec_path = out_dir / "launch_spec.json"
    spec = {
        "config": cfg.model_dump(mode="json"),
        "seed": seed,
        "model": model,
        "source": asdict(source),
        "out_dir": str(out_dir),
        "examples": [asdict(e) for e in examples],
    }
    spec_path.write_text(json.dumps(spec))
    summary_path = out_dir / SUMMARY_FILE
    summary_path.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path),
        "-m", "lai.train.sft", str(spec_path),
    ]  # fmt: skip
    env = dict(os.environ)
    if use_cpu:  # share the cores between the workers instead of oversubscribing them
        env.setdefault("OMP_NUM_THREADS", str(max(1, usable_cpus() // cfg.num_processes)))
    what = f"{cfg.distributed} training with {cfg.num_processes} processes"
    log.info("%s: accelerate launch --config_file %s (log: %s)", what, config_path, out_dir / "train.log")
    run_restarting_once(command, out_dir / "train.log", what, env=env)
    if not summary_path.exists():
        raise TrainError(f"{what} exited cleanly but wrote no {SUMMARY_FILE}; see {out_dir / 'train.log'}")
    return json.loads(summary_path.read_text())


def run_restarting_once(command: list[str], log_path: Path, what: str, env: dict[str, str] | None = None) -> None:
    """:func:`run_logged`, started once more if it died by a signal; the second crash is the error.

    A death by signal (the OOM killer, a stray SIGKILL, a fault) may not repeat, so one more
    try from scratch is worth it (training is seeded); an exit status is a Python error,
    which would only repeat.
    """
    try:
        run_logged(command, log_path, what, env=env)
    except ChildCrashed as crash:
        log.warning("%s; starting it once more", crash)
        try:
            run_logged(command, log_path, what, env=env)
        except ChildCrashed as again:
            raise TrainError(f"{again}; it crashed again after a restart") from None


def run_logged(command: list[str], log_path: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run ``command``, copy its output (stdout and stderr) to ``log_path``; raise TrainError on failure."""
    tail: collections.deque[str] = collections.deque(maxlen=200)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as handle:
        # Its own session, so that stopping lai (Ctrl-C, SIGTERM) stops every worker too.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
            errors="replace", start_new_session=True,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            for line in process.stdout:
                handle.write(line)
                handle.flush()
                tail.append(line.rstrip("\n"))
                log.debug("[train] %s", line.rstrip())
            code = process.wait()
        except BaseException:
            # torch's agent passes SIGTERM on to the workers
            stop_group(process, term_wait_s=30, kill_wait_s=5)
            raise
    if code != 0:
        cause = failure_cause(list(tail))
        message = f"{what} failed ({describe_exit(code)}){': ' + cause if cause else ''}; full log: {log_path}"
        raise (ChildCrashed if code < 0 else TrainError)(message)


class ChildCrashed(TrainError):
    """The launcher died by a signal (not a Python error): worth one more try."""


def failure_cause(lines: list[str]) -> str:
    """The most telling line of a failed worker's output, on one line (at most 300 characters)."""
    for line in reversed(lines):
        if ERROR_MARK in line:
            return one_line(line.split(ERROR_MARK, 1)[1])
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line.strip().removeprefix("[rank0]: ").removeprefix("[rank1]: "))
        if match and match.group(1) not in _WRAPPER_ERRORS:
            return one_line(f"{match.group(1)}: {match.group(2)}")
    return ""


def one_line(text: str) -> str:
    """An error as one line of at most 300 characters: what the train stage's error shows."""
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
