"""An LLM judge for open-ended answers: the metric ``llm_judge`` of task files.

The judge is any OpenAI-compatible endpoint. It reads a rubric (a prompt template over
``$question``, ``$reference`` and ``$response``; the default, ``judge_default``, is in
:mod:`lai.instructor.prompts`) and replies with JSON, ``{"reasoning": ..., "verdict":
"correct" | "incorrect"}``. Requests go through lai's instructor client
(:class:`~lai.instructor.async_client.AsyncOpenAIInstructor`: retries, pacing, and its
SQLite request cache keyed by the exact messages, so a verdict is paid for once and a
rerun reads it back). A verdict keeps the judge's reasoning, which a task file's score
puts in the per-item record's ``reason``.

Which endpoint judges, first match wins:

1. the metric entry's own ``base_url`` and ``model`` (``api_key_env`` for a key);
2. the process default, :func:`set_default_endpoint`: ``lai eval --judge-base-url URL
   --judge-model NAME``, or in ``lai run`` the run's instructor while a stage scores
   (:meth:`lai.instructor.session.InstructorSession.judging`);
3. the environment: ``LAI_JUDGE_BASE_URL``, ``LAI_JUDGE_MODEL``, ``LAI_JUDGE_API_KEY_ENV``.

Without one, the first verdict asked for is a one-line error saying how to give one.

A task file names it like any metric (``metric_list: [{metric: llm_judge}]``, options
``rubric`` (a template name or the template text itself), ``base_url``, ``model``,
``api_key_env``, ``temperature``, ``max_tokens``, ``structured_output``). Used from Python,
:class:`Judge` judges a batch at once (concurrently), :class:`LLMJudge` one item at a time
(the :class:`~lai.tasks.metrics.Metric` interface; ``verdict_many``: a batch at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from string import Template
from typing import Any, ClassVar

from lai.errors import ConfigError, InstructorError
from lai.instructor import prompts
from lai.instructor.base import InstructRequest
from lai.records import InstructRecord, Sample
from lai.tasks.metrics import Metric, Verdict

DEFAULT_RUBRIC = "judge_default"
#: The reply every rubric asks for (sent as structured output where the endpoint takes it).
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "verdict": {"type": "string", "enum": ["correct", "incorrect"]}},
    "required": ["reasoning", "verdict"],
}


@dataclass(frozen=True)
class JudgeEndpoint:
    base_url: str
    model: str
    api_key_env: str | None = None
    structured_output: str = "json_schema"
    #: the SQLite request cache; None: ``$XDG_CACHE_HOME/lai/judge_cache.sqlite``
    cache_path: str | None = None
    concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 3


@dataclass(frozen=True)
class JudgeVerdict:
    """One verdict: ``correct`` is None when the judge's reply could not be read (or the
    request failed); ``reasoning`` is the judge's, or why there is no verdict."""

    correct: bool | None
    reasoning: str
    model: str
    reply: str = ""

    def describe(self) -> str:
        said = {True: "correct", False: "incorrect", None: "no verdict"}[self.correct]
        return f"judge {self.model}: {said} ({self.reasoning.strip()[:300]})"


_default: JudgeEndpoint | None = None


def default_endpoint() -> JudgeEndpoint | None:
    """The endpoint set by :func:`set_default_endpoint`, if any."""
    return _default


def set_default_endpoint(endpoint: JudgeEndpoint | None) -> None:
    """The endpoint a metric without its own ``base_url`` uses (None: forget it)."""
    global _default
    _default = endpoint


def resolve_endpoint(options: dict[str, Any]) -> JudgeEndpoint:
    if options.get("base_url") or options.get("model"):
        if not (options.get("base_url") and options.get("model")):
            raise ConfigError("llm_judge: give both base_url and model (or neither, to use the default judge)")
        base = _default or JudgeEndpoint(base_url="", model="")
        return replace(
            base, base_url=options["base_url"], model=options["model"], api_key_env=options.get("api_key_env"),
            structured_output=options.get("structured_output", base.structured_output),
        )  # fmt: skip
    if _default is not None:
        return _default
    url, model = os.environ.get("LAI_JUDGE_BASE_URL"), os.environ.get("LAI_JUDGE_MODEL")
    if url and model:
        return JudgeEndpoint(base_url=url, model=model, api_key_env=os.environ.get("LAI_JUDGE_API_KEY_ENV") or None)
    raise ConfigError(
        "llm_judge has no endpoint to ask",
        hint="give the metric base_url and model, or lai eval --judge-base-url URL --judge-model NAME, "
        "or set LAI_JUDGE_BASE_URL and LAI_JUDGE_MODEL",
    )


def rubric_text(rubric: str) -> str:
    """A rubric option: template text (it mentions ``$response``) or a template's name."""
    return rubric if "$response" in rubric or "${response}" in rubric else prompts.template_text(rubric)


def parse_verdict(reply: str) -> tuple[bool | None, str]:
    """(verdict, reasoning) from a judge's reply: its JSON object, else a bare word."""
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            data = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            verdict = data.get("verdict", data.get("correct"))
            reasoning = str(data.get("reasoning", "")).strip()
            if isinstance(verdict, bool):
                return verdict, reasoning
            if isinstance(verdict, str) and verdict.strip().lower() in ("correct", "incorrect"):
                return verdict.strip().lower() == "correct", reasoning
            return None, f"the judge's reply has no verdict: {reply.strip()[:200]}"
    word = re.fullmatch(r"\W*(correct|incorrect)\W*", text, re.I)
    if word:
        return word.group(1).lower() == "correct", ""
    return None, f"the judge's reply could not be read: {reply.strip()[:200]}"


def _cache_path(endpoint: JudgeEndpoint) -> Path:
    if endpoint.cache_path:
        return Path(endpoint.cache_path)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lai" / "judge_cache.sqlite"


class Judge:
    """Verdicts on (question, reference, response) triples from one endpoint and rubric."""

    def __init__(
        self, endpoint: JudgeEndpoint, rubric: str = DEFAULT_RUBRIC, *, temperature: float = 0.0, max_tokens: int = 512
    ) -> None:
        self.endpoint = endpoint
        self.rubric = rubric
        self.template = rubric_text(rubric)
        self.template_hash = hashlib.sha256(self.template.encode()).hexdigest()[:12]
        cache = _cache_path(endpoint)
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Imported here: the OpenAI client costs ~0.4 s, and every lai run imports this module.
        from lai.instructor.async_client import AsyncOpenAIInstructor

        self.client = AsyncOpenAIInstructor(
            base_url=endpoint.base_url, model=endpoint.model, api_key_env=endpoint.api_key_env,
            temperature=temperature, max_tokens=max_tokens, concurrency=endpoint.concurrency,
            timeout_s=endpoint.timeout_s, max_retries=endpoint.max_retries,
            structured_output=endpoint.structured_output, cache_path=cache, stage="judge",
            corrective_retry=False,
        )  # fmt: skip

    def request(self, question: str, reference: str, response: str) -> InstructRequest:
        content = Template(self.template).safe_substitute(question=question, reference=reference, response=response)
        digest = hashlib.sha256(content.encode()).hexdigest()[:16]
        return InstructRequest(
            id=f"judge:{digest}", source_ids=[], task="judge", strategy="judge", n_requested=0,
            messages=[{"role": "user", "content": content}], schema=JUDGE_SCHEMA,
            template=self.rubric if self.template is not self.rubric else "inline", template_hash=self.template_hash,
        )  # fmt: skip

    def judge_many(self, items: list[tuple[str, str, str]]) -> list[JudgeVerdict]:
        """One verdict per (question, reference, response), in order; sent concurrently,
        each read from the cache when it was asked before."""
        requests = [self.request(*item) for item in items]
        records: dict[str, InstructRecord] = {}
        unique = list({r.id: r for r in requests}.values())
        self.client.run_all(unique, lambda record: records.__setitem__(record.id, record))
        failed = [record for record in records.values() if record.status != "ok"]
        if failed:
            # A request that failed (HTTP 401, 5xx after every retry, a garbled body) is no
            # verdict: scoring it "incorrect" would report a wrong score, and the written
            # record would keep it on a rerun. Stop instead; the verdicts that came back
            # are in the cache, so a rerun asks only for these.
            raise InstructorError(
                f"llm_judge: {len(failed)} of {len(unique)} judge request(s) to {self.endpoint.base_url} failed "
                f"(e.g. {str(failed[0].error)[:200]})",
                hint="fix the judge endpoint, then rerun the same command: the verdicts already given are cached",
            )
        return [self._verdict(records[r.id]) for r in requests]

    def judge(self, question: str, reference: str, response: str) -> JudgeVerdict:
        return self.judge_many([(question, reference, response)])[0]

    def _verdict(self, record: InstructRecord) -> JudgeVerdict:
        model = record.model or self.endpoint.model
        if record.status != "ok":
            return JudgeVerdict(None, f"the judge request failed: {record.error}", model)
        correct, reasoning = parse_verdict(record.reply)
        return JudgeVerdict(correct, reasoning, model, record.reply)

    def close(self) -> None:
        self.client.close()


class LLMJudge(Metric):
    """The ``llm_judge`` metric: right when the judge says the extracted answer is correct.

    Built when a task file is read, so nothing is contacted until the first verdict.
    """

    options_allowed: ClassVar[frozenset[str]] = frozenset(
        {"rubric", "base_url", "model", "api_key_env", "temperature", "max_tokens", "structured_output"}
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        rubric = options.get("rubric", DEFAULT_RUBRIC)
        if not isinstance(rubric, str) or not rubric.strip():
            raise ValueError("rubric must be a prompt template's name or its text (with $question, $reference, $response)")
        if "$response" not in rubric and "${response}" not in rubric:
            try:
                prompts.template_text(rubric)
            except ConfigError:
                raise ValueError(f"no prompt template named {rubric!r} (give a name, or the text with $response)") from None
        for key in ("base_url", "model", "api_key_env"):
            if options.get(key) is not None and not (isinstance(options[key], str) and options[key].strip()):
                raise ValueError(f"{key} must be text")
        if bool(options.get("base_url")) != bool(options.get("model")):
            raise ValueError("give both base_url and model (or neither, to use the default judge)")
        if options.get("structured_output", "json_schema") not in ("json_schema", "json_object", "none"):
            raise ValueError("structured_output must be json_schema, json_object or none")
        for key in ("temperature", "max_tokens"):
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{key} must be a number >= 0")
        self._judge: Judge | None = None
        self._endpoint: JudgeEndpoint | None = None

    def judge(self) -> Judge:
        endpoint = resolve_endpoint(dict(self.options))
        if self._judge is None or self._endpoint != endpoint:
            self._judge = Judge(
                endpoint, self.options.get("rubric", DEFAULT_RUBRIC),
                temperature=float(self.options.get("temperature", 0.0)), max_tokens=int(self.options.get("max_tokens", 512)),
            )  # fmt: skip
            self._endpoint = endpoint
        return self._judge

    def verdict(self, extracted: str, sample: Sample) -> Verdict:
        return self._verdict(self.judge().judge(sample.question, sample.reference, extracted), extracted, sample)

    def verdict_many(self, extracted: list[str | None], samples: list[Sample], responses: list[str]) -> list[Verdict | None]:
        """The batch's verdicts in one concurrent stage of requests (None where no answer was extracted)."""
        asked = [(i, answer) for i, answer in enumerate(extracted) if answer is not None]
        said = self.judge().judge_many([(samples[i].question, samples[i].reference, answer) for i, answer in asked])
        verdicts: list[Verdict | None] = [None] * len(samples)
        for (i, answer), verdict in zip(asked, said, strict=True):
            verdicts[i] = self._verdict(verdict, answer, samples[i])
        return verdicts

    @staticmethod
    def _verdict(said: JudgeVerdict, extracted: str, sample: Sample) -> Verdict:
        return Verdict(said.correct is True, extracted.strip(), sample.reference, reason=said.describe())


_NO_VERDICT = re.compile(r"\bjudge [^\n]*?: no verdict \(")  # JudgeVerdict.describe's words


def agreement(attempts: list[Any]) -> dict[str, dict[str, Any]]:
    """How often the judge agrees with exact match, on the items scored by both.

    Per judge verdict (``llm_judge,FILTER`` in the records' ``metrics``), against exact
    match under the same filter, else the first exact match recorded: items compared,
    agreed, the share agreed, and the two kinds of disagreement. Empty when no record
    holds both.
    """
    keys = sorted({key for a in attempts for key in a.metrics})
    exact = [k for k in keys if k.startswith("exact_match,")]
    found: dict[str, dict[str, Any]] = {}
    for key in (k for k in keys if k.startswith("llm_judge,")):
        if not exact:
            break
        partner = next((k for k in exact if k.split(",", 1)[1] == key.split(",", 1)[1]), exact[0])
        scored = [a for a in attempts if key in a.metrics and partner in a.metrics]
        # A reply without a readable verdict scores "not correct", but it is no judgement:
        # counted as agreeing with a wrong exact match, a judge that never answers would
        # look in perfect agreement. Left out, and counted.
        silent = [a for a in scored if _NO_VERDICT.search(getattr(a, "reason", "") or "")]
        both = [(bool(a.metrics[key]), bool(a.metrics[partner])) for a in scored if a not in silent]
        if not scored:
            continue
        agreed = sum(j == e for j, e in both)
        found[key] = {
            "exact_match": partner, "n": len(both), "agree": agreed, "rate": agreed / len(both) if both else 0.0,
            "judge_only": sum(j and not e for j, e in both), "exact_only": sum(e and not j for j, e in both),
            "no_verdict": len(silent),
        }  # fmt: skip
    return found
