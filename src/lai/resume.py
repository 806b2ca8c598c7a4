"""What may change when a run is resumed: how it is run, never what it is.

A run directory holds one experiment. Its identity is everything that decides the
records it holds: the target, the data and selection, the strategy and its prompts,
the instructor model and sampling settings, the checks and the training. Changing any
of those halfway would mix two experiments in one folder, so a resume refuses it.

How the run is carried out is another matter: a run stopped by ``max_cost`` must be
resumable with a higher cap, one that met rate limits with a lower concurrency, one
that got HTTP 404s with a fixed ``base_url``. Those settings (:data:`HOW_TO_RUN`) may
change on resume; each change is recorded in the manifest (``resumes``). ``iterations``
may grow (extending a run) but not shrink: the finished iterations would no longer
match the config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from lai.config import RunConfig, build_config, resolve_paths
from lai.errors import ConfigError
from lai.store import read_json

#: Dotted config keys (or prefixes) that say how a run is carried out, not what it is.
HOW_TO_RUN: tuple[str, ...] = (
    "instructor.max_cost",
    "instructor.max_failed_share",
    "instructor.concurrency",
    "instructor.rpm",
    "instructor.tpm",
    "instructor.timeout_s",
    "instructor.max_retries",
    "instructor.backoff_base_s",
    "instructor.backoff_max_s",
    "instructor.base_url",
    "instructor.api_key_env",
    "instructor.options.burst_s",
    "instructor.options.jitter_seed",
    "instructor.local.port",
    "instructor.local.n_threads",
    "instructor.local.startup_timeout_s",
    "instructor.local.launcher",
    "cluster.address",
    "cluster.workers",
    "cluster.cpus_per_worker",
    "cluster.gpus_per_worker",
    "cluster.local_cpus",
)


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves by dotted key; an empty mapping has none (``options: {}`` = no options)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def how_to_run(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in HOW_TO_RUN)


def compare(saved: dict[str, Any], current: dict[str, Any], where: str = "the run directory") -> dict[str, list[Any]]:
    """The allowed changes, ``{key: [old, new]}``; raise ConfigError for any other change.

    Both configs are plain dicts (``model_dump(mode="json")``).
    """
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    allowed = {k: [old.get(k), new.get(k)] for k in changed if how_to_run(k)}
    # Named by section ("strategy"), except the instructor's keys, where the same section
    # holds keys that may change: there the key itself says which one may not.
    refused = sorted(
        {k if k.startswith("instructor.") else k.split(".")[0] for k in changed if not how_to_run(k) and k != "iterations"}
    )
    if refused:
        raise ConfigError(
            f"{where} was started with a different config (differs in: {', '.join(refused)})",
            hint="rerun with the same config to resume, or pass a new --run-dir; only how it runs may "
            "change: max_cost, concurrency, rate limits, timeouts, retries, base_url, api_key_env, "
            "and iterations may grow",
        )
    before, after = saved.get("iterations"), current.get("iterations")
    if isinstance(before, int) and isinstance(after, int) and after != before:
        if after < before:
            raise ConfigError(
                f"iterations cannot shrink on resume ({before} -> {after})",
                hint=f"rerun with iterations >= {before}, or pass a new --run-dir",
            )
        allowed["iterations"] = [before, after]
    return allowed


def check_resumable(run_dir: Path, config: RunConfig, fingerprints: dict[str, str] | None = None) -> dict[str, list[Any]]:
    """Refuse to mix two experiments in one run directory; return the allowed changes.

    What the run is must not change; how it is run may (:func:`compare`); nor may the task
    files it uses (``fingerprints``: :func:`task_fingerprints`, when the caller has them).
    """
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return {}
    saved = yaml.safe_load(saved_path.read_text()) or {}
    if isinstance(saved, dict):  # a run saved before paths were absolute: they meant the working folder
        saved = resolve_paths(saved, Path.cwd())
    # Compare as validated configs: a run saved by an older lai lacks keys added since, and
    # their defaults must not count as a change. A saved file that no longer validates is
    # compared as written (and differs).
    with contextlib.suppress(ConfigError):
        saved = build_config(saved, source=str(saved_path)).model_dump(mode="json")
    allowed = compare(saved, config.model_dump(mode="json"), where=str(run_dir))
    before = read_json(run_dir / TASK_FILES, default=None)
    if isinstance(before, dict):
        now = task_fingerprints(config) if fingerprints is None else fingerprints
        changed = sorted(name for name in before.keys() & now.keys() if before[name] != now[name])
        if changed:
            raise ConfigError(
                f"{run_dir} was started with other versions of task file(s) {', '.join(changed)} "
                "(the task file or its data changed since)",
                hint="put the task file back as it was to resume, or pass a new --run-dir",
            )
    return allowed


#: A run's task files' fingerprints (lai.tasks.from_file.fingerprint), checked on resume.
TASK_FILES = "task_files.json"


def task_fingerprints(config: RunConfig) -> dict[str, str]:
    """Name -> fingerprint of every task-file task the run uses (its pools and benchmarks)."""
    from lai.tasks.from_file import fingerprint

    names = {pool.task for pool in config.select.pools} | {bench.task for bench in config.evaluate.benchmarks}
    return {name: digest for name in sorted(names) if (digest := fingerprint(name)) is not None}
