"""The LLMs-as-Instructors loop, one iteration after another, resumable at any point.

    iteration 0:  evaluate the starting model (the baseline)
    iteration k:  select -> collect -> instruct -> parse -> verify -> train -> evaluate -> retest

Each stage reads its inputs from the run directory and writes its outputs there; it
is skipped when its ``.done`` marker exists, and otherwise continues after the records
already written (see :mod:`lai.store`). The next iteration starts from the model the
previous one trained.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from lai.config import BenchmarkConfig, PoolConfig, RunConfig, build_config, dump_config
from lai.distributed import AnswerJob, RayPool, TargetSpec, answer_and_score_sharded, ray_scorer
from lai.errors import ConfigError, LaiError
from lai.instructor import INSTRUCTORS, Instructor, InstructRequest
from lai.instructor.ledger import CostLedger, cost_of, estimate, price_for
from lai.instructor.local_server import LocalInstructorServer, supervised
from lai.instructor.prompts import render
from lai.instructor.retrieval import build_embedder
from lai.instructor.runner import check_failures, final_records, pending_requests, run_requests
from lai.manifest import Manifest
from lai.models import Target
from lai.models.resolve import cache_dir
from lai.progress import NullProgress, Progress, StageProgress, describe_done
from lai.quality.decontaminate import ContaminationIndex
from lai.quality.diagnoses import group_by_diagnosis
from lai.quality.parse import drop_reasons, parse_records
from lai.quality.verify import verify_samples
from lai.records import Attempt, GeneratedSample, InstructRecord, Sample
from lai.report.html import write_html
from lai.report.markdown import write_report
from lai.scoring import accuracy, answer_and_score, summarize
from lai.store import (
    RunStore,
    atomic_write_json,
    atomic_write_text,
    eval_file,
    read_jsonl,
    read_records,
    to_jsonl,
)
from lai.strategies import STRATEGIES
from lai.strategies.base import Strategy
from lai.tasks import get_task
from lai.tasks.base import Task
from lai.train import TRAINERS
from lai.train.base import TrainExample

log = logging.getLogger(__name__)


def check_resumable(run_dir: Path, config: RunConfig) -> dict[str, list[Any]]:
    """Refuse to mix two experiments in one run directory; return the allowed changes.

    What the run is must not change; how it is run may (:mod:`lai.resume`).
    """
    import yaml

    from lai.resume import compare

    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return {}
    saved = yaml.safe_load(saved_path.read_text()) or {}
    if isinstance(saved, dict):  # a run saved before paths were absolute: they meant the working folder
        from lai.config import resolve_paths

        saved = resolve_paths(saved, Path.cwd())
    # Compare as validated configs: a run saved by an older lai lacks keys added since, and
    # their defaults must not count as a change. A saved file that no longer validates is
    # compared as written (and differs).
    with contextlib.suppress(ConfigError):
        saved = build_config(saved, source=str(saved_path)).model_dump(mode="json")
    return compare(saved, config.model_dump(mode="json"), where=str(run_dir))


class Pipeline:
    def __init__(self, config: RunConfig, run_dir: Path, progress: Progress | None = None) -> None:
        self.config = config
        self.store = RunStore(run_dir)
        self.progress = progress or NullProgress()
        run_dir.mkdir(parents=True, exist_ok=True)
        self._hold_run_dir(run_dir)
        changes = check_resumable(run_dir, config)
        config_text = dump_config(config)
        atomic_write_text(run_dir / "config.yaml", config_text)
        self.manifest = Manifest(run_dir / "manifest.json", seed=config.seed, config_text=config_text)
        if changes:
            self.manifest.record_resume(changes)
        self.tasks: dict[str, Task] = {}
        self._pools: dict[tuple[str, str, Path | None], list[Sample]] = {}
        self._target: Target | None = None
        self._target_model: str | None = None
        self._pool: RayPool | None = None
        self._pool_model: str | None = None

    def _hold_run_dir(self, run_dir: Path) -> None:
        """One process per run directory (lai.runlock); released when this object goes."""
        import weakref

        from lai import runlock

        weakref.finalize(self, runlock.release, runlock.acquire(run_dir))

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
                self._stage(k, "verify", lambda k=k: self.verify(k))
                model = self._stage(k, "train", lambda k=k, m=model: self.train(k, m))["model"]
                self._stage(k, "evaluate", lambda k=k, m=model: self.evaluate(k, m))
                self._stage(k, "retest", lambda k=k, m=model: self.retest(k, m))
        finally:
            self._release_target()
        write_html([self.store.root])
        return write_report(self.store.root)

    def _stage(self, k: int, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = f"iter_{k:02d}/{name}"
        if self.store.is_done(k, name):
            summary = self.store.summary(k, name)
            # Killed between its marker and its manifest entry: book that attempt's time.
            self.manifest.stage_settled(key)
            log.info("resume: iteration %d %s: done on disk (%s), skipped", k, name, describe_done(name, summary))
            return summary
        log.info("stage %s", key)
        earlier = int(self.manifest.data["stages"].get(key, {}).get("attempts", 0))
        if earlier:
            log.info("resume: iteration %d %s: %d earlier attempt(s) did not finish; continuing from what is on disk", k, name, earlier)
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
            self._pools[key] = self.task(task).load(
                pool, path=path, data_dir=self.config.data_dir, strict=self.config.strict_loading
            )
        return self._pools[key]

    def benchmark_samples(self) -> dict[str, tuple[BenchmarkConfig, list[Sample]]]:
        """Benchmarks by key: "task/pool", with "@lm-eval" when not the paper protocol."""
        benches = {}
        for bench in self.config.evaluate.benchmarks:
            rows = self.pool(bench.task, bench.pool, bench.path)
            key = f"{bench.task}/{bench.pool}" + ("" if bench.protocol == "paper" else f"@{bench.protocol}")
            benches[key] = (bench, rows[: bench.limit] if bench.limit else rows)
        return benches

    def target_spec(self, model: str) -> TargetSpec:
        """How to build the target for ``model``: here (:meth:`target`) or in Ray actors (:meth:`ray_pool`)."""
        cfg = self.config.target
        settings = {"dtype": cfg.dtype, "device": cfg.device, "batch_size": cfg.batch_size, **cfg.options}
        return TargetSpec(cfg.backend, model, settings)

    def target(self, model: str, iteration: int) -> Target:
        """Load a target once and reuse it across stages until the model changes."""
        if self._target is None or self._target_model != model:
            self._release_target()
            self._target = self.target_spec(model).build()
            self._target_model = model
            self.manifest.record_model(iteration, model, self._target.fingerprint())
        return self._target

    def ray_pool(self, model: str, iteration: int) -> RayPool:
        """Ray actors holding ``model``, made once and reused until the model changes."""
        if self._pool is None or self._pool_model != model:
            self._release_target()
            self._pool = RayPool(self.config.cluster, self.target_spec(model))
            self._pool_model = model
            self.manifest.record_model(iteration, model, self._pool.fingerprint())
        return self._pool

    def _release_target(self) -> None:
        if self._target is not None:
            self._target.close()
        self._target, self._target_model = None, None
        if self._pool is not None:
            self._pool.close()
        self._pool, self._pool_model = None, None

    def _answer(
        self, model: str, k: int, samples: list[Sample], out: Path, label: str, bench: BenchmarkConfig | None = None
    ) -> list[Attempt]:
        label = f"iteration {k}: {label}"  # both evaluations of a benchmark, told apart
        cfg = self.config.target
        protocol = bench.protocol if bench else "paper"
        tasks = {s.task: self.task(s.task) for s in samples}
        if bench and bench.scoring != "auto":
            mode = bench.scoring
        else:
            mode = tasks[samples[0].task].scoring_mode(protocol) if samples else "generate"
        job = AnswerJob(protocol, mode, cfg.batch_size, cfg.max_new_tokens)  # type: ignore[arg-type]
        if self.config.cluster.backend == "ray":
            return answer_and_score_sharded(
                lambda: self.ray_pool(model, k), samples, out, job, self.config.cluster.shard_size,
                progress=self.progress, label=label,
            )  # fmt: skip
        return answer_and_score(
            self.target(model, k), tasks, samples, out, batch_size=job.batch_size,
            max_new_tokens=job.max_new_tokens, protocol=protocol, mode=job.mode, progress=self.progress, label=label,
        )  # fmt: skip

    # ---- stages ---------------------------------------------------------------------

    def select(self, k: int) -> dict[str, Any]:
        """Draw fresh questions: iteration k takes the k-th slice of a seeded shuffle.

        Rows that a benchmark evaluates on are never drawn, so a train slice can serve
        as a held-out evaluation set.
        """
        chosen: list[dict[str, str]] = []
        for spec, candidates in self._shuffled_pools():
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

    def _shuffled_pools(self) -> list[tuple[PoolConfig, list[Sample]]]:
        """Each training pool in its seeded order, without the rows a benchmark evaluates on."""
        held_out = {s.id for _, rows in self.benchmark_samples().values() for s in rows}
        shuffled = []
        for spec in self.config.select.pools:
            candidates = [s for s in self.pool(spec.task, spec.pool, spec.path) if s.id not in held_out]
            seed = int(hashlib.sha256(f"{self.config.seed}/{spec.task}/{spec.pool}".encode()).hexdigest()[:8], 16)
            random.Random(seed).shuffle(candidates)
            shuffled.append((spec, candidates))
        return shuffled

    def unselected_rows(self) -> list[Sample]:
        """Pool rows that no iteration of this run selects (what the real-data baselines use)."""
        return [s for spec, rows in self._shuffled_pools() for s in rows[self.config.iterations * spec.n :]]

    def pool_texts(self) -> list[tuple[str, str]]:
        """(id, question) of every training-pool row, for the duplicate check."""
        return [(s.id, s.question) for spec in self.config.select.pools for s in self.pool(spec.task, spec.pool, spec.path)]

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

    def _instructor(self, stack: ExitStack, k: int, stage: str, server: LocalInstructorServer | None) -> Instructor:
        """The instructor client for one stage; ``server`` is the local server when there is one."""
        cfg = self.config.instructor
        settings = cfg.model_dump(exclude={"backend", "local", "options", "prices", "max_cost", "max_failed_share", "cache_path"})
        # One request cache per run (or a shared one), one cost ledger per iteration.
        settings.update(
            cache_path=cfg.cache_path or self.store.root / "instructor_cache.sqlite",
            ledger=CostLedger(self._prices(), path=self.store.path(k, "ledger.json"), spend_path=self.store.root / "spend.jsonl"),
            stage=stage,
            iteration=k,
        )
        if server is not None:
            settings.update(base_url=server.base_url, model=server.model_alias, api_key_env=None)
        instructor = INSTRUCTORS.build(cfg.backend, **settings, **cfg.options)
        stack.callback(instructor.close)
        return instructor

    def strategy(self, k: int) -> Strategy:
        cfg = self.config.strategy
        cls = STRATEGIES.get(cfg.name)
        options = {name: getattr(cfg, name) for name in cls.options}  # what the strategy declares it reads
        return cls(cfg.budget, self.config.seed, iteration=k, cache_dir=embedding_cache(), **options)

    def control_ids(self, attempts: list[Attempt]) -> set[str]:
        """The errors held back from the strategy: the untargeted control of the fix rate.

        A seeded draw of ``strategy.control_fraction`` of each task's errors, so targeted
        and control errors come from the same tasks in the same proportions.
        """
        fraction = self.config.strategy.control_fraction
        by_task: dict[str, list[str]] = {}
        for a in attempts:
            if not a.correct:
                by_task.setdefault(a.task, []).append(a.id)
        held: set[str] = set()
        for task_name, ids in sorted(by_task.items()):
            ids.sort()
            random.Random(f"{self.config.seed}/control/{task_name}").shuffle(ids)
            held.update(ids[: round(fraction * len(ids))])
        return held

    def _attempts_for_strategy(self, k: int) -> list[Attempt]:
        attempts = read_records(self.store.path(k, "collect.jsonl"), Attempt)
        control = self.control_ids(attempts)
        return [a for a in attempts if a.id not in control]

    def plan_requests(self, k: int) -> list[InstructRequest]:
        attempts = self._attempts_for_strategy(k)
        requests = self.strategy(k).plan(attempts, {a.task: self.task(a.task) for a in attempts})
        self._record_templates(requests)
        return requests

    def _record_templates(self, requests: list[InstructRequest]) -> None:
        for template, digest in sorted({(r.template, r.template_hash) for r in requests if r.template}):
            self.manifest.record_template(template, digest)

    def instruct(self, k: int) -> dict[str, Any]:
        strategy = self.strategy(k)
        if not strategy.uses_instructor:
            return self._direct(k, strategy)
        records = self._send(k, self.plan_requests(k), "instruct.jsonl", stage="instruct")
        prices = self._prices()
        return {
            "control_errors": self._control_count(k),
            "requests": len(records),
            "ok": sum(r.status == "ok" for r in records),
            "failed": sum(r.status != "ok" for r in records),
            "samples_requested": sum(r.n_requested for r in records),
            "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records),
            "cost_usd": round(sum(cost_of(prices, r.model, r.prompt_tokens, r.completion_tokens) for r in records), 6),
            "models": sorted({r.model for r in records if r.model}),
        }

    def _send(self, k: int, requests: list[InstructRequest], name: str, stage: str) -> list[InstructRecord]:
        """Send the requests without a record in ``name`` (resumable); return all their records.

        The instructor (and a local server) starts only when something is left to send.
        """
        out = self.store.path(k, name)
        todo = pending_requests(requests, out)
        if todo and len(todo) < len(requests):
            log.info(
                "resume: iteration %d %s: found %d of %d replies on disk, %d to send",
                k, stage, len(requests) - len(todo), len(requests), len(todo),
            )  # fmt: skip
        if todo:
            with ExitStack() as stack:
                waiting = self._waiting_for_instructor(stack, k, stage)
                local = self.config.instructor.local
                server = (
                    stack.enter_context(LocalInstructorServer(local, self.store.root / "logs" / "instructor_server.log"))
                    if local.enabled
                    else None
                )
                instructor = self._instructor(stack, k, stage=stage, server=server)
                instructor.check()
                waiting.close()
                # A local server that dies is restarted once per stage; the runner resumes.
                supervised(server, lambda: run_requests(
                    instructor, pending_requests(requests, out), out, total=len(requests), progress=self.progress,
                    max_cost=self.config.instructor.max_cost, label=f"iteration {k}: {stage}",
                ))  # fmt: skip
        return self._final(requests, out, stage)

    def _waiting_for_instructor(self, stack: ExitStack, k: int, stage: str) -> StageProgress:
        """A spinner while the local server starts (a minute on a busy CPU) and the endpoint is checked."""
        what = "starting the local instructor server" if self.config.instructor.local.enabled else "connecting to the instructor"
        spinner = self.progress.start(f"iteration {k}: {stage}: {what}", None)
        stack.callback(spinner.close)
        return spinner

    def _final(self, requests: list[InstructRequest], out: Path, stage: str) -> list[InstructRecord]:
        """One record per request (a good one if any attempt got one); a stage that mostly
        failed stops here, not done, so a rerun retries its failed requests."""
        final = final_records(out)
        records = [final[r.id] for r in requests if r.id in final]
        cfg = self.config.instructor
        check_failures(records, max_failed_share=cfg.max_failed_share, base_url=cfg.base_url, label=stage)
        return records

    def _direct(self, k: int, strategy: Strategy) -> dict[str, Any]:
        """Baselines without an instructor: real rows, written where parse will read them."""
        attempts = self._attempts_for_strategy(k)
        tasks = {a.task: self.task(a.task) for a in attempts}
        samples = strategy.direct_samples(attempts, tasks, self.unselected_rows())
        atomic_write_text(self.store.path(k, "direct.jsonl"), to_jsonl(samples))
        return {"control_errors": self._control_count(k), "requests": 0, "direct_samples": len(samples)}

    def _control_count(self, k: int) -> int:
        return len(self.control_ids(read_records(self.store.path(k, "collect.jsonl"), Attempt)))

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
        requests = self.plan_requests(1) if self.strategy(1).uses_instructor else []
        prompt, completion = price_for(self._prices(), cfg.model)
        price = {"prompt": prompt, "completion": completion}
        # A bound, not a guess: every reply at max_tokens, and every request (re-solves
        # included) answered twice when the corrective retry is on.
        corrective = cfg.corrective_retry and cfg.backend == "openai"  # the fakes never ask twice
        bill = estimate(requests, cfg.max_tokens, price, corrective=corrective)
        # Re-solving: at most n solves of every requested math / multiple-choice sample. A
        # generated question is about as long as the question it came from, so each source
        # question stands in for its samples' prompts; counted, not listed (budget 10^6).
        check = self.config.verify.resolve
        verify_bill = estimate([], check.max_tokens, price)
        if check.enabled:
            questions = {a.id: a.question for a in read_records(self.store.path(1, "collect.jsonl"), Attempt)}
            for request in requests:
                rule = self.task(request.task).resolve_rule
                if rule is not None:
                    content = render(rule.template, question=questions.get(request.source_ids[0], ""))
                    verify_bill += estimate(
                        [[{"role": "user", "content": content}]], check.max_tokens, price,
                        corrective=corrective, repeat=request.n_requested * check.n,
                    )  # fmt: skip
        total = {
            key: bill.as_dict()[key] + verify_bill.as_dict()[key]
            for key in ("requests", "calls", "prompt_tokens", "completion_tokens", "cost")
        }
        return {
            "iteration": 1, "instructor": cfg.model, **total,
            "instruct": bill.as_dict(), "verify": verify_bill.as_dict(),
            "control_errors": self._control_count(1),
        }  # fmt: skip

    def parse(self, k: int) -> dict[str, Any]:
        records = list(final_records(self.store.path(k, "instruct.jsonl")).values())
        sources = {a.id: a.question for a in read_records(self.store.path(k, "collect.jsonl"), Attempt)}
        tasks = {r.task: self.task(r.task) for r in records}
        samples = parse_records(records, tasks, sources, k, check_format=self.config.verify.format)
        samples += read_records(self.store.path(k, "direct.jsonl"), GeneratedSample)
        out = self.store.path(k, "generated.jsonl")
        atomic_write_text(out, to_jsonl(samples))
        kept = [s for s in samples if s.kept]
        reasons = drop_reasons(samples)
        # "parsed" counts samples the parser found, whatever the checks said of them; a
        # failed request or an unreadable reply stands for a whole reply, not a sample.
        parsed = len(samples) - reasons.get("request failed", 0) - reasons.get("unparseable reply", 0)
        return {"parsed": parsed, "kept": len(kept), "dropped": len(samples) - len(kept), "drop_reasons": reasons}

    def verify(self, k: int) -> dict[str, Any]:
        samples = read_records(self.store.path(k, "generated.jsonl"), GeneratedSample)
        tasks = {s.task: self.task(s.task) for s in samples}
        before = sum(s.kept for s in samples)
        cfg = self.config.verify
        embedder = functools.cache(lambda: build_embedder(cfg.embedder or self.config.strategy.embedder, embedding_cache()))

        def contamination() -> ContaminationIndex:
            benches = {key: [(s.id, s.question) for s in rows] for key, (_, rows) in self.benchmark_samples().items()}
            return ContaminationIndex(benches, n=cfg.decontaminate.ngram, embedder=embedder(), threshold=cfg.decontaminate.threshold)

        def resolve(requests: list[InstructRequest]) -> list[InstructRecord]:
            self._record_templates(requests)
            return self._send(k, requests, "verify_instruct.jsonl", stage="verify")

        scorer = ray_scorer(self.config.cluster) if self.config.cluster.backend == "ray" else None
        checked, summary = verify_samples(
            samples, tasks, cfg, pool=self.pool_texts, contamination=contamination, embedder=embedder,
            resolve=resolve, score_many=scorer,
        )  # fmt: skip
        atomic_write_text(self.store.path(k, "verified.jsonl"), to_jsonl(checked))
        kept = sum(s.kept for s in checked)
        entered = {s.id for s in samples if s.kept}
        reasons = drop_reasons([s for s in checked if not s.kept and s.id in entered])
        return {**summary, "checked": before, "kept": kept, "dropped": before - kept, "drop_reasons": reasons}

    def train(self, k: int, model: str) -> dict[str, Any]:
        samples = [s for s in read_records(self.store.path(k, "verified.jsonl"), GeneratedSample) if s.kept]
        if not samples:
            log.warning("iteration %d: no generated sample passed the checks; the model is not trained", k)
            return {"model": model, "examples": 0, "trained": False, "skipped": "no samples kept"}
        examples = []
        for sample in samples:
            task = self.task(sample.task)
            examples.append(
                TrainExample(task.prompt(task.training_sample(sample.question)), task.training_target(sample.solution, sample.answer))
            )
        self._release_target()  # free the inference copy before training loads its own
        trainer = TRAINERS.build(
            self.config.train.backend, self.config.train, seed=self.config.seed + k, progress=self.progress,
            label=f"iteration {k}: train",
        )  # fmt: skip
        out_dir = self.store.path(k, "train")
        out_dir.mkdir(parents=True, exist_ok=True)
        return trainer.train(model, examples, out_dir)

    def evaluate(self, k: int, model: str) -> dict[str, Any]:
        scores = {}
        for key, (bench, samples) in self.benchmark_samples().items():
            out = self.store.path(k, eval_file(key))
            scores[key] = summarize(self._answer(model, k, samples, out, f"evaluate {key}", bench))
        # Rows a task could not read were skipped (and logged with their ids): say how many.
        skipped = {key: len(self.task(b.task).skipped(b.pool)) for key, (b, _) in self.benchmark_samples().items()}
        result = {"model": model, "scores": scores, **({"skipped_rows": {key: n for key, n in skipped.items() if n}} if any(skipped.values()) else {})}
        atomic_write_json(self.store.path(k, "eval.json"), result)
        return result

    def retest(self, k: int, model: str) -> dict[str, Any]:
        """Ask the trained model this iteration's errors again: the fix rate.

        ``targeted`` errors have at least one kept training sample made from them;
        ``control`` errors were held back from the strategy by a seeded draw, so the gap
        between the two rates is what the targeted samples did beyond training in
        general; ``other`` errors were shown to the instructor but yielded no kept sample.
        """
        attempts = read_records(self.store.path(k, "collect.jsonl"), Attempt)
        errors = [a for a in attempts if not a.correct]
        control = self.control_ids(attempts)
        samples = read_records(self.store.path(k, "verified.jsonl"), GeneratedSample)
        targeted = {s.error_id for s in samples if s.kept and s.error_id}
        index = {s.id: s for s in self._selected_samples(k)}
        again = self._answer(model, k, [index[a.id] for a in errors], self.store.path(k, "retest.jsonl"), "retest")
        fixed = {a.id for a in again if a.correct}
        groups = {
            "targeted": [a.id for a in errors if a.id in targeted],
            "control": [a.id for a in errors if a.id in control],
            "other": [a.id for a in errors if a.id not in targeted and a.id not in control],
        }
        summary = {
            name: {"n": len(ids), "fixed": sum(i in fixed for i in ids), "rate": rate(sum(i in fixed for i in ids), len(ids))}
            for name, ids in groups.items()
        }
        atomic_write_json(
            self.store.path(k, "diagnoses.json"), group_by_diagnosis(errors, samples, fixed, self._diagnosis_embedder())
        )
        return {"model": model, **summary}

    def _diagnosis_embedder(self) -> Any:
        return build_embedder(self.config.verify.embedder or self.config.strategy.embedder, embedding_cache())


def embedding_cache() -> Path:
    """Embeddings are cached per machine, not per run: keyed by model and text, they are
    the same in every run, and embedding a 7k-question pool takes minutes on a CPU."""
    return cache_dir() / "embeddings"


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
