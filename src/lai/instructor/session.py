"""The instructor as one run uses it: a batch of requests sent resumably into a record
file, the client (and a local server) started only when something is left to send.

The instruct stage and verify's re-solving both send through :meth:`InstructorSession.send`,
so both resume the same way, share the request cache and the run's spend ledger, and
stop the same way when most requests fail.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from lai.config import RunConfig
from lai.instructor import INSTRUCTORS, Instructor, InstructRequest
from lai.instructor.ledger import CostLedger
from lai.instructor.local_server import LocalInstructorServer, supervised
from lai.instructor.runner import check_failures, final_records, pending_requests, run_requests
from lai.manifest import Manifest
from lai.progress import Progress, StageProgress
from lai.records import InstructRecord
from lai.store import RunStore
from lai.tasks.base import Task

log = logging.getLogger(__name__)


class InstructorSession:
    def __init__(self, config: RunConfig, store: RunStore, manifest: Manifest, progress: Progress) -> None:
        self.config = config
        self.store = store
        self.manifest = manifest
        self.progress = progress

    @contextlib.contextmanager
    def judging(self, tasks: Iterable[Task]) -> Iterator[None]:
        """While a stage scores ``tasks``: when one asks the default LLM judge, the run's
        instructor judges. A local server (which otherwise lives only while a stage sends)
        is started for the stage, so a task file's ``llm_judge`` works offline too; a
        remote endpoint is asked with the run's key. Verdicts go through the run's request
        cache, so a rerun does not ask again."""
        cfg = self.config.instructor
        if not (cfg.local.enabled or cfg.base_url) or not any(task.asks_default_judge() for task in tasks):
            yield
            return
        from lai import judge

        with ExitStack() as stack:
            if cfg.local.enabled:
                server = stack.enter_context(self._local_server())
                base_url, model, key = server.base_url, server.model_alias, None
            else:
                base_url, model, key = cfg.base_url, cfg.model, cfg.api_key_env
            previous = judge.default_endpoint()
            judge.set_default_endpoint(
                judge.JudgeEndpoint(
                    base_url=base_url, model=model, api_key_env=key, structured_output=cfg.structured_output,
                    cache_path=str(cfg.cache_path or self.store.root / "instructor_cache.sqlite"),
                )
            )  # fmt: skip
            try:
                yield
            finally:
                judge.set_default_endpoint(previous)

    def prices(self) -> dict[str, dict[str, float]]:
        return {model: price.model_dump() for model, price in self.config.instructor.prices.items()}

    def record_templates(self, requests: list[InstructRequest]) -> None:
        """Book each prompt template's hash in the manifest: a changed prompt is another experiment."""
        for template, digest in sorted({(r.template, r.template_hash) for r in requests if r.template}):
            self.manifest.record_template(template, digest)

    def send(self, k: int, requests: list[InstructRequest], name: str, stage: str) -> list[InstructRecord]:
        """Send the requests without a record in ``name`` (resumable); return all their records.

        The instructor (and a local server) starts only when something is left to send.
        """
        self.record_templates(requests)
        out = self.store.path(k, name)
        todo = pending_requests(requests, out)
        if todo and len(todo) < len(requests):
            log.info(
                "resume: iteration %d %s: found %d of %d replies on disk, %d to send",
                k, stage, len(requests) - len(todo), len(requests), len(todo),
            )  # fmt: skip
        if todo:
            with ExitStack() as stack:
                waiting = self._waiting(stack, k, stage)
                server = stack.enter_context(self._local_server()) if self.config.instructor.local.enabled else None
                instructor = self._client(stack, k, stage=stage, server=server)
                instructor.check()
                waiting.close()
                # A local server that dies is restarted once per stage; the runner resumes.
                supervised(server, lambda: run_requests(
                    instructor, pending_requests(requests, out), out, total=len(requests), progress=self.progress,
                    max_cost=self.config.instructor.max_cost, label=f"iteration {k}: {stage}",
                ))  # fmt: skip
        return self._final(requests, out, stage)

    def _local_server(self) -> LocalInstructorServer:
        """The local instructor server (started by ``with``), its log in the run's logs/."""
        return LocalInstructorServer(self.config.instructor.local, self.store.root / "logs" / "instructor_server.log")

    def _client(self, stack: ExitStack, k: int, stage: str, server: LocalInstructorServer | None) -> Instructor:
        """The instructor client for one stage; ``server`` is the local server when there is one."""
        cfg = self.config.instructor
        settings: dict[str, Any] = cfg.model_dump(
            exclude={"backend", "local", "options", "prices", "max_cost", "max_failed_share", "cache_path"}
        )
        # One request cache per run (or a shared one), one cost ledger per iteration.
        settings.update(
            cache_path=cfg.cache_path or self.store.root / "instructor_cache.sqlite",
            ledger=CostLedger(self.prices(), path=self.store.path(k, "ledger.json"), spend_path=self.store.root / "spend.jsonl"),
            stage=stage,
            iteration=k,
        )
        if server is not None:
            settings.update(base_url=server.base_url, model=server.model_alias, api_key_env=None)
        instructor = INSTRUCTORS.build(cfg.backend, **settings, **cfg.options)
        stack.callback(instructor.close)
        return instructor

    def _waiting(self, stack: ExitStack, k: int, stage: str) -> StageProgress:
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
