"""``lai eval``: score any supported target on a list of tasks, resumably.

Uses the same answering and scoring code as the loop's collect and evaluate stages
(:func:`lai.scoring.answer_and_score`), so a number from ``lai eval`` and one from a run
report mean the same thing. Per-item records go to ``<out>/<task>.jsonl`` and the
summary to ``<out>/summary.json``; rerunning the same command continues after the items
already written. An output folder remembers what it was made with and refuses to mix
models, protocols or settings.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lai.errors import ConfigError, LaiError
from lai.locate import check_local_model
from lai.preflight import check_writable
from lai.progress import Progress
from lai.records import Sample
from lai.scoring import answer_and_score, summarize
from lai.store import atomic_write_json, read_json
from lai.targets import TARGETS
from lai.tasks import get_task
from lai.tasks.base import PROTOCOLS, Task

if TYPE_CHECKING:
    from lai.judge import JudgeEndpoint


def pick_pool(task: Task, pool: str | None) -> str:
    if pool is not None:
        if pool not in task.pools:
            raise ConfigError(f"task {task.name} has no pool {pool!r}", hint=f"it has {', '.join(task.pools)}")
        return pool
    return "test" if "test" in task.pools else next(iter(task.pools))


def _guard_output(out: Path, settings: dict[str, Any]) -> None:
    if (out / "manifest.json").is_file() or (out / "config.yaml").is_file():
        raise LaiError(
            f"{out} is the folder of a lai run; lai eval would write its files among the run's",
            hint="give lai eval an --out folder of its own",
        )
    saved = read_json(out / "eval_config.json")
    if saved is not None and saved != settings:
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        raise ConfigError(
            f"{out} holds an evaluation with different settings (differs in: {', '.join(changed)})",
            hint="use another --out folder, or the same settings to resume",
        )
    atomic_write_json(out / "eval_config.json", settings)


def evaluate_model(
    model: str,
    task_names: list[str],
    out: Path,
    *,
    protocol: str = "paper",
    limit: int | None = None,
    seed: int | None = None,
    pool: str | None = None,
    scoring: str = "auto",
    backend: str = "hf",
    batch_size: int = 16,
    max_new_tokens: int = 256,
    data_dir: Path | None = None,
    target_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    strict: bool = False,
    judge: JudgeEndpoint | None = None,
) -> dict[str, Any]:
    """Score ``model`` on ``task_names``; a row a task cannot read is skipped and counted
    (``skipped`` in the summary) unless ``strict``. ``judge``: the endpoint of tasks scored
    by an LLM judge (its verdicts cached in ``<out>/judge_cache.sqlite`` unless it names a
    cache); where a task has both, the summary says how often judge and exact match agree."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}", hint=f"choose one of: {', '.join(PROTOCOLS)}")
    if not task_names:
        raise ConfigError("no task to evaluate", hint="name at least one, e.g. gsm8k (lai tasks lists them)")
    if backend in ("hf", "vllm"):  # before the data is read and the model loaded
        check_local_model(model, "--model")
    check_writable(out)
    tasks = {name: get_task(name) for name in task_names}
    samples: dict[str, list[Sample]] = {}
    modes: dict[str, str] = {}
    for name, task in tasks.items():
        samples[name] = task.load(pick_pool(task, pool), data_dir=data_dir, limit=limit, seed=seed, strict=strict)
        modes[name] = task.scoring_mode(protocol) if scoring == "auto" else scoring
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "model": model, "backend": backend, "protocol": protocol, "limit": limit, "seed": seed, "pool": pool,
        "scoring": scoring, "max_new_tokens": max_new_tokens, "tasks": sorted(task_names),
    }  # fmt: skip
    if judge is not None:  # verdicts of another judge are not to be mixed in on resume; its
        settings["judge"] = judge.model  # base_url may change (a judge restarted elsewhere), as a run's instructor's may
    from lai.tasks.from_file import fingerprint

    if files := {name: digest for name in sorted(task_names) if (digest := fingerprint(name))}:
        settings["task_files"] = files  # a task file edited since: another task, not a resume
    _guard_output(out, settings)
    if judge is not None:
        from lai import judge as judging

        judging.set_default_endpoint(judge if judge.cache_path else replace(judge, cache_path=str(out / "judge_cache.sqlite")))
    target = TARGETS.build(backend, model, batch_size=batch_size, **(target_options or {}))
    started = time.monotonic()
    results: dict[str, Any] = {}
    try:
        for name, task in tasks.items():
            task_started = time.monotonic()
            attempts = answer_and_score(
                target, {name: task}, samples[name], out / f"{name}.jsonl",
                batch_size=batch_size, max_new_tokens=max_new_tokens, protocol=protocol,
                mode=modes[name], progress=progress, label=f"{name} ({protocol})",  # type: ignore[arg-type]
            )  # fmt: skip
            results[name] = {**summarize(attempts), "scoring": modes[name], "seconds": round(time.monotonic() - task_started, 2)}
            if any(key.startswith("llm_judge,") for a in attempts for key in a.metrics):
                from lai.judge import agreement

                if found := agreement(attempts):
                    results[name]["judge_agreement"] = found
            if skipped := task.skipped(pick_pool(task, pool)):
                results[name]["skipped"] = len(skipped)
        summary = {
            "model": model,
            "fingerprint": target.fingerprint(),
            "protocol": protocol,
            "tasks": results,
            "seconds": round(time.monotonic() - started, 2),
        }
    finally:
        target.close()
        if judge is not None:
            from lai import judge as judging

            judging.set_default_endpoint(None)
    atomic_write_json(out / "summary.json", summary)
    return summary
