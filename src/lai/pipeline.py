"""The LLMs-as-Instructors loop, one iteration after another, resumable at any point.

    iteration 0:  evaluate the starting model (the baseline)
    iteration k:  select -> collect -> instruct -> parse -> train -> evaluate

Each stage reads its inputs from the run directory and writes its outputs there; it
is skipped when its ``.done`` marker exists, and otherwise continues after the records
already written (see :mod:`lai.store`). The next iteration starts from the model the
previous one trained.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from lai.config import BenchmarkConfig, RunConfig, dump_config
from lai.errors import ConfigError, LaiError
from lai.instructor import INSTRUCTORS, Instructor, InstructRequest
from lai.instructor.ledger import CostLedger, cost_of, estimate, price_for
from lai.instructor.local_server import LocalInstructorServer
from lai.instructor.prompts import template_hash
from lai.instructor.runner import pending_requests, run_requests
from lai.manifest import Manifest
from lai.models import TARGETS, Target
from lai.progress import NullProgress, Progress
from lai.quality.parse import drop_reasons, parse_records
from lai.records import Attempt, GeneratedSample, InstructRecord, Sample
from lai.scoring import accuracy, answer_and_score, summarize
from lai.store import (
    RunStore,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
    read_records,
    to_jsonl,
)
from lai.strategies import STRATEGIES
from lai.tasks import get_task
from lai.tasks.base import Task
from lai.train import TRAINERS
from lai.train.base import TrainExample

log = logging.getLogger(__name__)


def check_resumable(run_dir: Path, config: RunConfig) -> None:
    """Refuse to mix two configs in one run directory (only ``iterations`` may grow)."""
    import yaml

    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    current = config.model_dump(mode="json")
    changed = sorted(k for k in set(saved) | set(current) if k != "iterations" and saved.get(k) != current.get(k))
    if changed:
        raise ConfigError(
            f"{run_dir} was started with a different config (differs in: {', '.join(changed)})",
            hint="rerun with the same config to resume, or pass a new --run-dir",
        )


class Pipeline:
    def __init__(self, config: RunConfig, run_dir: Path, progress: Progress | None = None) -> None:
        self.config = config
        self.store = RunStore(run_dir)
        self.progress = progress or NullProgress()
        run_dir.mkdir(parents=True, exist_ok=True)
        check_resumable(run_dir, config)
        config_text = dump_config(config)
        atomic_write_text(run_dir / "config.yaml", config_text)
        self.manifest = Manifest(run_dir / "manifest.json", seed=config.seed, config_text=config_text)
        self.tasks: dict[str, Task] = {}
        self._pools: dict[tuple[str, str, Path | None], list[Sample]] = {}
        self._target: Target | None = None
        self._target_model: str | None = None

    # ---- the loop -------------------------------------------------------------------

    def run(self) -> Path:
        model = self.config.target.model
        try:
            if self.config.evaluate.baseline:
                self._stage(0, "evaluate", lambda: self.evaluate(0, model))
            for k in range(1, self.config.iterations + 1):
                self._stage(k, "select", lambda k=k: self.select(k))
                self._stage(k, "collect", lambda k=k, m=model: self.collect(k, m))
                self._stage(k, "instruct", lambda k=k: self.instruct(k))
                self._stage(k, "parse", lambda k=k: self.parse(k))
                model = self._stage(k, "train", lambda k=k, m=model: self.train(k, m))["model"]
                self._stage(k, "evaluate", lambda k=k, m=model: self.evaluate(k, m))
        finally:
            self._release_target()
        from lai.report.markdown import write_report

        return write_report(self.store.root)

    def _stage(self, k: int, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if self.store.is_done(k, name):
            return self.store.summary(k, name)
        key = f"iter_{k:02d}/{name}"
        log.info("stage %s", key)
        self.manifest.stage_started(key)
        started = time.monotonic()
        try:
            summary = work()
        except BaseException as error:
            self.manifest.stage_failed(key, time.monotonic() - started, f"{type(error).__name__}: {error}")
            raise
        self.store.mark_done(k, name, summary)
        self.manifest.stage_finished(key, time.monotonic() - started)
        return summary

    # ---- shared helpers -------------------------------------------------------------

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            self.tasks[name] = get_task(name)
        return self.tasks[name]

    def pool(self, task: str, pool: str, path: Path | None) -> list[Sample]:
        key = (task, pool, path)
        if key not in self._pools:
            self._pools[key] = self.task(task).load(pool, path=path, data_dir=self.config.data_dir)
        return self._pools[key]

    def benchmark_samples(self) -> dict[str, tuple[BenchmarkConfig, list[Sample]]]:
        """Benchmarks by key: "task/pool", with "@lm-eval" when not the paper protocol."""
        benches = {}
        for bench in self.config.evaluate.benchmarks:
            rows = self.pool(bench.task, bench.pool, bench.path)
            key = f"{bench.task}/{bench.pool}" + ("" if bench.protocol == "paper" else f"@{bench.protocol}")
            benches[key] = (bench, rows[: bench.limit] if bench.limit else rows)
        return benches

    def target(self, model: str, iteration: int) -> Target:
        """Load a target once and reuse it across stages until the model changes."""
        if self._target is None or self._target_model != model:
            self._release_target()
            cfg = self.config.target
            self._target = TARGETS.build(
                cfg.backend, model, dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size, **cfg.options
            )
            self._target_model = model
            self.manifest.record_model(iteration, model, self._target.fingerprint())
        return self._target

    def _release_target(self) -> None:
        if self._target is not None:
            self._target.close()
        self._target, self._target_model = None, None

    def _answer(
        self, model: str, k: int, samples: list[Sample], out: Path, label: str, bench: BenchmarkConfig | None = None
    ) -> list[Attempt]:
        cfg = self.config.target
        protocol = bench.protocol if bench else "paper"
        mode = bench.scoring if bench and bench.scoring != "auto" else None
        tasks = {s.task: self.task(s.task) for s in samples}
        return answer_and_score(
            self.target(model, k),
            tasks,
            samples,
            out,
            batch_size=cfg.batch_size,
            max_new_tokens=cfg.max_new_tokens,
            protocol=protocol,
            mode=mode or (tasks[samples[0].task].scoring_mode(protocol) if samples else "generate"),  # type: ignore[arg-type]
            progress=self.progress,
            label=label,
        )

    # ---- stages ---------------------------------------------------------------------

    def select(self, k: int) -> dict[str, Any]:
        """Draw fresh questions: iteration k takes the k-th slice of a seeded shuffle.

        Rows that a benchmark evaluates on are never drawn, so a train slice can serve
        as a held-out evaluation set.
        """
        held_out = {s.id for _, rows in self.benchmark_samples().values() for s in rows}
        chosen: list[dict[str, str]] = []
        for spec in self.config.select.pools:
            candidates = [s for s in self.pool(spec.task, spec.pool, spec.path) if s.id not in held_out]
            seed = int(hashlib.sha256(f"{self.config.seed}/{spec.task}/{spec.pool}".encode()).hexdigest()[:8], 16)
            random.Random(seed).shuffle(candidates)
            picked = candidates[(k - 1) * spec.n : k * spec.n]
            if not picked:
                raise LaiError(
                    f"the {spec.task}/{spec.pool} pool has no unused rows left for iteration {k}",
                    hint="lower select.pools[].n or the number of iterations",
                )
            chosen += [{"id": s.id, "task": s.task, "pool": spec.pool} for s in picked]
        out = self.store.path(k, "selection.jsonl")
        atomic_write_text(out, to_jsonl(chosen))
        return {"selected": len(chosen)}

    def _selected_samples(self, k: int) -> list[Sample]:
        specs = {(p.task, p.pool): p.path for p in self.config.select.pools}
        rows = read_jsonl(self.store.path(k, "selection.jsonl"))
        index = {s.id: s for (task, pool), path in specs.items() for s in self.pool(task, pool, path)}
        return [index[row["id"]] for row in rows]

    def collect(self, k: int, model: str) -> dict[str, Any]:
        attempts = self._answer(model, k, self._selected_samples(k), self.store.path(k, "collect.jsonl"), "collect")
        stats = accuracy(attempts)
        return {**stats, "wrong": stats["n"] - stats["correct"]}

    def _prices(self) -> dict[str, dict[str, float]]:
        return {model: price.model_dump() for model, price in self.config.instructor.prices.items()}

    def _instructor(self, stack: ExitStack, k: int) -> Instructor:
        cfg = self.config.instructor
        settings = cfg.model_dump(exclude={"backend", "local", "options", "prices", "max_cost", "cache_path"})
        # One request cache per run (or a shared one), one cost ledger per iteration.
        settings.update(
            cache_path=cfg.cache_path or self.store.root / "instructor_cache.sqlite",
            ledger=CostLedger(self._prices(), path=self.store.path(k, "ledger.json")),
            stage="instruct",
            iteration=k,
        )
        if cfg.local.enabled:
            server = stack.enter_context(LocalInstructorServer(cfg.local, self.store.root / "logs" / "instructor_server.log"))
            settings.update(base_url=server.base_url, model=server.model_alias, api_key_env=None)
        instructor = INSTRUCTORS.build(cfg.backend, **settings, **cfg.options)
        stack.callback(instructor.close)
        return instructor

    def plan_requests(self, k: int) -> list[InstructRequest]:
        attempts = read_records(self.store.path(k, "collect.jsonl"), Attempt)
        cfg = self.config.strategy
        strategy = STRATEGIES.build(
            cfg.name, cfg.budget, self.config.seed, k=cfg.k, embedder=cfg.embedder,
            cache_dir=self.store.root / "embeddings",
        )  # fmt: skip
        requests = strategy.plan(attempts, {a.task: self.task(a.task) for a in attempts})
        for task_name in {r.task for r in requests}:
            template = strategy.template_for(self.task(task_name))
            self.manifest.record_template(template, template_hash(template))
        return requests

    def instruct(self, k: int) -> dict[str, Any]:
        requests = self.plan_requests(k)
        out = self.store.path(k, "instruct.jsonl")
        todo = pending_requests(requests, out)
        if todo:
            with ExitStack() as stack:
                instructor = self._instructor(stack, k)
                instructor.check()
                run_requests(
                    instructor, todo, out, total=len(requests), progress=self.progress,
                    max_cost=self.config.instructor.max_cost,
                )  # fmt: skip
        records = read_records(out, InstructRecord)
        prices = self._prices()
        return {
            "requests": len(records),
            "ok": sum(r.status == "ok" for r in records),
            "failed": sum(r.status != "ok" for r in records),
            "samples_requested": sum(r.n_requested for r in records),
            "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records),
            "cost_usd": round(sum(cost_of(prices, r.model, r.prompt_tokens, r.completion_tokens) for r in records), 6),
            "models": sorted({r.model for r in records if r.model}),
        }

    def dry_run(self) -> dict[str, Any]:
        """Select and collect iteration 1 (local work), then estimate the instructor's bill.

        Nothing is sent to the instructor. Later iterations depend on the trained model, so
        only the first is estimated; the collect records are kept, and a real run resumes
        after them.
        """
        try:
            self._stage(1, "select", lambda: self.select(1))
            self._stage(1, "collect", lambda: self.collect(1, self.config.target.model))
        finally:
            self._release_target()
        cfg = self.config.instructor
        requests = self.plan_requests(1)
        prompt, completion = price_for(self._prices(), cfg.model)
        bill = estimate(requests, cfg.max_tokens, {"prompt": prompt, "completion": completion})
        return {"iteration": 1, "instructor": cfg.model, **bill.as_dict()}

    def parse(self, k: int) -> dict[str, Any]:
        records = read_records(self.store.path(k, "instruct.jsonl"), InstructRecord)
        sources = {a.id: a.question for a in read_records(self.store.path(k, "collect.jsonl"), Attempt)}
        samples = parse_records(records, {r.task: self.task(r.task) for r in records}, sources, k)
        out = self.store.path(k, "generated.jsonl")
        atomic_write_text(out, to_jsonl(samples))
        kept = [s for s in samples if s.kept]
        reasons = drop_reasons(samples)
        # "parsed" counts samples the parser found, whatever the checks said of them; a
        # failed request or an unreadable reply stands for a whole reply, not a sample.
        parsed = len(samples) - reasons.get("request failed", 0) - reasons.get("unparseable reply", 0)
        return {"parsed": parsed, "kept": len(kept), "dropped": len(samples) - len(kept), "drop_reasons": reasons}

    def train(self, k: int, model: str) -> dict[str, Any]:
        samples = [s for s in read_records(self.store.path(k, "generated.jsonl"), GeneratedSample) if s.kept]
        if not samples:
            log.warning("iteration %d: no generated sample was kept; the model is not trained", k)
            return {"model": model, "examples": 0, "trained": False, "skipped": "no samples kept"}
        examples = []
        for sample in samples:
            task = self.task(sample.task)
            examples.append(
                TrainExample(task.prompt(task.training_sample(sample.question)), task.training_target(sample.solution, sample.answer))
            )
        self._release_target()  # free the inference copy before training loads its own
        trainer = TRAINERS.build(self.config.train.backend, self.config.train, seed=self.config.seed + k)
        out_dir = self.store.path(k, "train")
        out_dir.mkdir(parents=True, exist_ok=True)
        return trainer.train(model, examples, out_dir)

    def evaluate(self, k: int, model: str) -> dict[str, Any]:
        scores = {}
        for key, (bench, samples) in self.benchmark_samples().items():
            out = self.store.path(k, f"eval/{key.replace('/', '-').replace('@', '-')}.jsonl")
            scores[key] = summarize(self._answer(model, k, samples, out, f"evaluate {key}", bench))
        atomic_write_json(self.store.path(k, "eval.json"), {"model": model, "scores": scores})
        return {"model": model, "scores": scores}


def load_summaries(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Every finished stage's summary, by iteration (what the report is built from)."""
    store = RunStore(run_dir)
    summaries: dict[int, dict[str, Any]] = {}
    for k in store.iterations():
        for marker in sorted(store.iteration_dir(k).glob("*.done")):
            summaries.setdefault(k, {})[marker.stem] = read_json(marker, default={}) or {}
    return summaries
