"""The LLMs-as-Instructors loop, one iteration after another, resumable at any point.

    iteration 0:  evaluate the starting model (the baseline)
    iteration k:  select -> collect -> instruct -> parse -> verify -> train -> evaluate -> retest

Each stage reads its inputs from the run directory and writes its outputs there; it
is skipped when its ``.done`` marker exists, and otherwise continues after the records
already written (see :mod:`lai.store`). The next iteration starts from the model the
previous one trained.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lai.answering import LoadedTarget
from lai.config import RunConfig, dump_config
from lai.cost_estimate import estimate_bill
from lai.embedding import build_embedder
from lai.instructor import InstructRequest
from lai.instructor.ledger import cost_of
from lai.instructor.runner import final_records
from lai.instructor.session import InstructorSession
from lai.locate import cache_dir
from lai.manifest import Manifest
from lai.progress import NullProgress, Progress, describe_done
from lai.quality.decontaminate import ContaminationIndex
from lai.quality.diagnoses import group_by_diagnosis
from lai.quality.parse import drop_reasons, parse_records
from lai.quality.verify import apply_resolve, local_checks, resolve_requests
from lai.ray_cluster import ray_scorer
from lai.records import Attempt, GeneratedSample
from lai.report.html import write_html
from lai.report.markdown import write_report
from lai.resume import TASK_FILES, check_resumable, task_fingerprints
from lai.scoring import accuracy, summarize
from lai.selection import Pools, control_ids
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
from lai.train import TRAINERS
from lai.train.base import training_example

log = logging.getLogger(__name__)


class Pipeline:
    """The loop. Its collaborators, each in its own module: :class:`Pools` (which rows),
    :class:`LoadedTarget` (the target, loaded once per model), :class:`InstructorSession`
    (requests sent resumably), the strategy and the trainer from their registries."""

    def __init__(self, config: RunConfig, run_dir: Path, progress: Progress | None = None) -> None:
        self.config = config
        self.store = RunStore(run_dir)
        self.progress = progress or NullProgress()
        run_dir.mkdir(parents=True, exist_ok=True)
        self._hold_run_dir(run_dir)
        fingerprints = task_fingerprints(config)  # each task file and its data read once
        changes = check_resumable(run_dir, config, fingerprints)
        config_text = dump_config(config)
        atomic_write_text(run_dir / "config.yaml", config_text)
        if fingerprints:
            atomic_write_json(run_dir / TASK_FILES, fingerprints)
        self.manifest = Manifest(run_dir / "manifest.json", seed=config.seed, config_text=config_text)
        if changes:
            self.manifest.record_resume(changes)
        self.pools = Pools(config)
        self.target = LoadedTarget(config, self.manifest, self.pools.task, self.progress)
        self.instructor = InstructorSession(config, self.store, self.manifest, self.progress)

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
                self._stage(0, "evaluate", self.evaluate, 0, model)
            for k in range(1, self.config.iterations + 1):
                self._stage(k, "select", self.select, k)
                self._stage(k, "collect", self.collect, k, model)
                self._stage(k, "instruct", self.instruct, k)
                self._stage(k, "parse", self.parse, k)
                self._stage(k, "verify", self.verify, k)
                trained = self._stage(k, "train", self.train, k, model)
                model = trained["model"]  # the next stages and iteration start from it
                self._stage(k, "evaluate", self.evaluate, k, model)
                self._stage(k, "retest", self.retest, k, model)
        finally:
            self.target.release()
        write_html([self.store.root])
        return write_report(self.store.root)

    def _stage(self, k: int, name: str, work: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        """Run ``work(*args)`` as stage ``name`` of iteration ``k`` unless its ``.done``
        marker exists; book its time and outcome in the manifest, its summary in the marker."""
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
            summary = work(*args)
        except BaseException as error:
            self.manifest.stage_failed(key, time.monotonic() - started, f"{type(error).__name__}: {error}")
            raise
        self.store.mark_done(k, name, summary)
        self.manifest.stage_finished(key, time.monotonic() - started)
        return summary

    # ---- stages, in the order they run ----------------------------------------------

    def select(self, k: int) -> dict[str, Any]:
        """Draw fresh questions: iteration k takes the k-th slice of a seeded shuffle;
        rows that a benchmark evaluates on are never drawn (:meth:`Pools.draw`)."""
        chosen = self.pools.draw(k)
        atomic_write_text(self.store.path(k, "selection.jsonl"), to_jsonl(chosen))
        return {"selected": len(chosen)}

    def collect(self, k: int, model: str) -> dict[str, Any]:
        selected = self.pools.selected(read_jsonl(self.store.path(k, "selection.jsonl")))
        with self.instructor.judging(self.pools.tasks_of(selected).values()):
            attempts = self.target.answer(model, k, selected, self.store.path(k, "collect.jsonl"), "collect")
        stats = accuracy(attempts)
        return {**stats, "wrong": stats["n"] - stats["correct"]}

    def instruct(self, k: int) -> dict[str, Any]:
        strategy = self.strategy(k)
        if not strategy.uses_instructor:
            return self._direct(k, strategy)
        records = self.instructor.send(k, self.plan_requests(k), "instruct.jsonl", stage="instruct")
        prices = self.instructor.prices()
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

    def parse(self, k: int) -> dict[str, Any]:
        records = list(final_records(self.store.path(k, "instruct.jsonl")).values())
        sources = {a.id: a.question for a in read_records(self.store.path(k, "collect.jsonl"), Attempt)}
        tasks = self.pools.tasks_of(records)
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
        """The checks of :mod:`lai.quality.verify`: the local ones first, then re-solving,
        whose requests go through the same resumable session as the instruct stage's."""
        samples = read_records(self.store.path(k, "generated.jsonl"), GeneratedSample)
        tasks = self.pools.tasks_of(samples)
        before = sum(s.kept for s in samples)
        cfg = self.config.verify
        embedder = functools.cache(lambda: build_embedder(self.config.checks_embedder, embedding_cache()))

        def contamination() -> ContaminationIndex:
            benches = {key: [(s.id, s.question) for s in rows] for key, (_, rows) in self.pools.benchmarks().items()}
            return ContaminationIndex(benches, n=cfg.decontaminate.ngram, embedder=embedder(), threshold=cfg.decontaminate.threshold)

        scorer = ray_scorer(self.config.cluster) if self.config.cluster.backend == "ray" else None
        checked, summary = local_checks(
            samples, tasks, cfg, pool=self.pools.texts, contamination=contamination, embedder=embedder, score_many=scorer
        )
        r = cfg.resolve
        requests = resolve_requests(checked, tasks, r.n, r.temperature, r.max_tokens) if r.enabled else []
        records = self.instructor.send(k, requests, "verify_instruct.jsonl", stage="verify") if requests else []
        checked, summary = apply_resolve(checked, summary, tasks, cfg, requests, records)
        atomic_write_text(self.store.path(k, "verified.jsonl"), to_jsonl(checked))
        kept = sum(s.kept for s in checked)
        entered = {s.id for s in samples if s.kept}
        reasons = drop_reasons([s for s in checked if not s.kept and s.id in entered])
        return {**summary, "checked": before, "kept": kept, "dropped": before - kept, "drop_reasons": reasons}

    def train(self, k: int, model: str) -> dict[str, Any]:
        """Train ``model`` on the kept samples; the summary's ``model`` is the trained one
        (``model`` itself when nothing was kept)."""
        samples = [s for s in read_records(self.store.path(k, "verified.jsonl"), GeneratedSample) if s.kept]
        if not samples:
            log.warning("iteration %d: no generated sample passed the checks; the model is not trained", k)
            return {"model": model, "examples": 0, "trained": False, "skipped": "no samples kept"}
        examples = [training_example(self.pools.task(s.task), s) for s in samples]
        self.target.release()  # free the inference copy before training loads its own
        trainer = TRAINERS.build(
            self.config.train.backend, self.config.train, seed=self.config.seed + k, progress=self.progress,
            label=f"iteration {k}: train",
        )  # fmt: skip
        out_dir = self.store.path(k, "train")
        out_dir.mkdir(parents=True, exist_ok=True)
        return trainer.train(model, examples, out_dir)

    def evaluate(self, k: int, model: str) -> dict[str, Any]:
        scores = {}
        benchmarks = self.pools.benchmarks()
        with self.instructor.judging(self.pools.tasks_of(s for _, rows in benchmarks.values() for s in rows).values()):
            for key, (bench, samples) in benchmarks.items():
                out = self.store.path(k, eval_file(key))
                scores[key] = summarize(self.target.answer(model, k, samples, out, f"evaluate {key}", bench))
        # Rows a task could not read were skipped (and logged with their ids): say how many.
        skipped = {key: len(self.pools.task(b.task).skipped(b.pool)) for key, (b, _) in benchmarks.items()}
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
        index = {s.id: s for s in self.pools.selected(read_jsonl(self.store.path(k, "selection.jsonl")))}
        asked = [index[a.id] for a in errors]
        with self.instructor.judging(self.pools.tasks_of(asked).values()):
            again = self.target.answer(model, k, asked, self.store.path(k, "retest.jsonl"), "retest")
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
        embedder = build_embedder(self.config.checks_embedder, embedding_cache())
        atomic_write_json(self.store.path(k, "diagnoses.json"), group_by_diagnosis(errors, samples, fixed, embedder))
        return {"model": model, **summary}

    # ---- what the instruct stage asks of the strategy -------------------------------

    def strategy(self, k: int) -> Strategy:
        cfg = self.config.strategy
        cls = STRATEGIES.get(cfg.name)
        options = {name: getattr(cfg, name) for name in cls.options}  # what the strategy declares it reads
        options.update(self.config.strategy_settings(cls))  # and its own settings, if it has any
        return cls(cfg.budget, self.config.seed, iteration=k, cache_dir=embedding_cache(), **options)

    def control_ids(self, attempts: list[Attempt]) -> set[str]:
        """The errors held back from the strategy (:func:`lai.selection.control_ids`)."""
        return control_ids(attempts, self.config.seed, self.config.strategy.control_fraction)

    def _attempts_for_strategy(self, k: int) -> list[Attempt]:
        attempts = read_records(self.store.path(k, "collect.jsonl"), Attempt)
        control = self.control_ids(attempts)
        return [a for a in attempts if a.id not in control]

    def _control_count(self, k: int) -> int:
        return len(self.control_ids(read_records(self.store.path(k, "collect.jsonl"), Attempt)))

    def plan_requests(self, k: int) -> list[InstructRequest]:
        attempts = self._attempts_for_strategy(k)
        return self.strategy(k).plan(attempts, self.pools.tasks_of(attempts))

    def _direct(self, k: int, strategy: Strategy) -> dict[str, Any]:
        """Baselines without an instructor: real rows, written where parse will read them."""
        attempts = self._attempts_for_strategy(k)
        tasks = self.pools.tasks_of(attempts)
        samples = strategy.direct_samples(attempts, tasks, self.pools.unselected())
        atomic_write_text(self.store.path(k, "direct.jsonl"), to_jsonl(samples))
        return {"control_errors": self._control_count(k), "requests": 0, "direct_samples": len(samples)}

    # ---- lai run --dry-run ----------------------------------------------------------

    def dry_run(self) -> dict[str, Any]:
        """Select and collect iteration 1 (local work), then estimate the instructor's bill.

        Nothing is sent to the instructor. Later iterations depend on the trained model, so
        only the first is estimated; the collect records are kept, and a real run resumes
        after them.
        """
        try:
            self._stage(1, "select", self.select, 1)
            self._stage(1, "collect", self.collect, 1, self.config.target.model)
        finally:
            self.target.release()
        requests = self.plan_requests(1) if self.strategy(1).uses_instructor else []
        self.instructor.record_templates(requests)
        questions = {a.id: a.question for a in read_records(self.store.path(1, "collect.jsonl"), Attempt)}
        bill = estimate_bill(self.config, requests, self.pools.task, questions, self.instructor.prices())
        return {"iteration": 1, **bill, "control_errors": self._control_count(1)}


def embedding_cache() -> Path:
    """Embeddings are cached per machine, not per run: keyed by model and text, they are
    the same in every run, and embedding a 7k-question pool takes minutes on a CPU."""
    return cache_dir() / "embeddings"


def rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
