"""The answer-extraction filters and the metrics a task file can name.

Both follow lm-evaluation-harness's vocabulary where it has one, so a ``filter_list`` or a
``metric_list`` written for lm-eval reads the same here:

- filters (``filter_list[].filter[].function``): ``regex`` (``regex_pattern``,
  ``group_select``, ``fallback``), ``take_first``, ``lowercase``, ``uppercase``,
  ``remove_whitespace``; and lai's own ``strip``, ``number`` (``"$1,234.50"`` ->
  ``"1234.5"``), ``choice_letter`` (the option letter a free-text reply chose, as the
  built-in multiple-choice tasks read it) and ``whole`` (the whole reply, stripped).
  lai's ``regex`` also takes a *list* of patterns: the first that matches anywhere wins
  (GSM8K's "the answer is N", else "#### N", else the last number).
- metrics (``metric_list[].metric``): ``exact_match`` (``ignore_case``,
  ``ignore_punctuation``, ``regexes_to_ignore``, as lm-eval's), ``numeric`` (``tolerance``:
  absolute, default 0), ``choice`` (the same letter) and ``unit_tests`` (the code, then the
  reference tests, run in the sandbox).

A metric is one entry of :data:`METRICS` (a :class:`~lai.registry.Registry`): a class
built from its ``metric_list`` options that scores one extracted answer against the
reference. Another module adds a metric with ``METRICS.register(name, "module:Class")``;
the LLM judge (``llm_judge``) is registered that way, so this module never imports it.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import string
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from lai import sandbox
from lai.errors import ConfigError
from lai.records import Sample
from lai.registry import Registry
from lai.tasks.choice import extract_letter
from lai.tasks.code import explain
from lai.tasks.gsm8k import normalize_number

INVALID = "[invalid]"  # lm-eval's fallback for a regex that matches nothing


# ---- filters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One step of an answer-extraction pipeline (lm-eval's ``filter`` entries)."""

    function: str
    options: Mapping[str, Any]

    def apply(self, text: str, options_of_sample: Mapping[str, str]) -> str:
        if text == INVALID:
            return text
        if self.function == "regex":
            return _regex(text, self.options)
        if self.function in ("take_first", "take_last"):  # one response per item: nothing to pick
            return text
        if self.function == "lowercase":
            return text.lower()
        if self.function == "uppercase":
            return text.upper()
        if self.function == "remove_whitespace":
            return text.lstrip()
        if self.function in ("strip", "whole"):
            return text.strip()
        if self.function == "number":
            return normalize_number(text) or INVALID
        if self.function == "choice_letter":
            return extract_letter(text, options_of_sample) or INVALID
        if self.function == "code_block":
            blocks = _CODE_BLOCK.findall(text)
            return blocks[0].strip() if blocks else text.strip() or INVALID
        raise AssertionError(self.function)  # the spec's validation refuses unknown names


#: name -> the options it takes (checked when the task file is read).
FILTER_OPTIONS: dict[str, frozenset[str]] = {
    "regex": frozenset({"regex_pattern", "group_select", "fallback"}),
    "take_first": frozenset(),
    "take_last": frozenset(),
    "lowercase": frozenset(),
    "uppercase": frozenset(),
    "remove_whitespace": frozenset(),
    "strip": frozenset(),
    "whole": frozenset(),
    "number": frozenset(),
    "choice_letter": frozenset(),
    "code_block": frozenset(),
}
_CODE_BLOCK = re.compile(r"```[\w+-]*[^\S\n]*\n(.*?)```", re.DOTALL)


def compile_patterns(value: Any) -> list[re.Pattern[str]]:
    """``regex_pattern``: one pattern or a list of them; re.error names the bad one."""
    patterns = value if isinstance(value, list) else [value]
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError("regex_pattern must be a regular expression or a list of them")
    return [re.compile(p) for p in patterns]


#: The longest a task file's regular expression may take on one reply.
REGEX_LIMIT_S = 5.0


class TookTooLong(Exception):
    """A :func:`time_limit` ran out."""


def _raise_timeout(signum: int, frame: object) -> None:
    raise TookTooLong


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TookTooLong when the block runs over ``seconds``: for what a task file makes
    lai run (its regexes, its templates), which could otherwise run for ages. A timer
    interrupts Python code and Python's regex engine alike; off the main thread (no
    signals there) the block runs unbounded. An alarm already set (pytest-timeout's) is
    left alone when it comes first, else put back afterwards."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    pending, interval = signal.getitimer(signal.ITIMER_REAL)
    if pending and pending <= seconds:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if pending:  # put back the alarm that was set, less the time spent here
            signal.setitimer(signal.ITIMER_REAL, max(pending - (time.monotonic() - started), 0.001), interval)


@contextlib.contextmanager
def bounded(pattern: re.Pattern[str], text: str) -> Iterator[None]:
    """Run a task file's regex on a reply for at most REGEX_LIMIT_S seconds: a pattern that
    backtracks catastrophically (``(\\d+)+x`` on forty digits) would otherwise run for ages."""
    try:
        with time_limit(REGEX_LIMIT_S):
            yield
    except TookTooLong:
        raise ConfigError(
            f"the regular expression {pattern.pattern!r} took over {REGEX_LIMIT_S:g} s on one reply "
            f"({len(text)} characters): it backtracks catastrophically",
            hint="rewrite it without a repetition inside a repetition, such as (a+)+ or (\\w*\\s*)*",
        ) from None


def _regex(text: str, options: Mapping[str, Any]) -> str:
    """lm-eval's RegexFilter: the selected match's first non-empty group; a list of
    patterns is tried in order, the first with any match wins."""
    select = int(options.get("group_select", 0))
    for pattern in options["_compiled"]:
        with bounded(pattern, text):
            found = pattern.findall(text)
        if not found:
            continue
        try:
            match = found[select]
        except IndexError:
            match = found[-1]
        if isinstance(match, tuple):
            match = next((m for m in match if m), None)
            if match is None:
                return str(options.get("fallback", INVALID))
        return match.strip()
    return str(options.get("fallback", INVALID))


def run_filters(filters: list[Filter], response: str, options: Mapping[str, str]) -> str | None:
    """The extracted answer, or None when the pipeline found none."""
    text = response
    for step in filters:
        text = step.apply(text, options)
    return None if text == INVALID else text


# ---- metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    correct: bool
    shown: str  # the answer as compared (after the metric's normalisation)
    gold: str
    reason: str = ""  # the metric's own words for the verdict (a judge's); empty: lai's wording


class Metric:
    """Scores one extracted answer against a sample's reference.

    ``options`` are the ``metric_list`` entry's keys besides ``metric``; a bad option
    raises ValueError (the task file's loader names the key and line). ``normalize``
    puts an answer in the form compared, so the instructor side (format checks,
    re-solving votes) reads answers the way scoring does.
    """

    options_allowed: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - self.options_allowed - {"aggregation", "higher_is_better"}
        if unknown:
            allowed = ", ".join(sorted(self.options_allowed)) or "none"
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} (this metric takes: {allowed})")
        self.options = options

    def normalize(self, text: str) -> str | None:
        return text.strip() or None

    def verdict_many(self, extracted: list[str | None], samples: list[Sample], responses: list[str]) -> list[Verdict | None]:
        """A batch of verdicts (None where no answer was extracted); a metric that asks an
        endpoint overrides this to send the batch at once."""
        return [None if e is None else self.verdict(e, s) for e, s in zip(extracted, samples, strict=True)]

    def verdict(self, extracted: str, sample: Sample) -> Verdict:
        shown, gold = self.normalize(extracted), self.normalize(sample.reference)
        return Verdict(shown is not None and shown == gold, shown or extracted, gold or sample.reference)


class ExactMatch(Metric):
    """lm-eval's exact_match: the regexes removed, then case and punctuation if asked."""

    options_allowed = frozenset({"ignore_case", "ignore_punctuation", "regexes_to_ignore"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for flag in ("ignore_case", "ignore_punctuation"):
            if not isinstance(options.get(flag, False), bool):
                raise ValueError(f"{flag} must be true or false")
        ignore = options.get("regexes_to_ignore") or []
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise ValueError("regexes_to_ignore must be a list of regular expressions")
        self.ignore = [re.compile(p) for p in ignore]

    def normalize(self, text: str) -> str | None:
        for pattern in self.ignore:
            with bounded(pattern, text):
                text = pattern.sub("", text)
        if self.options.get("ignore_case"):
            text = text.lower()
        if self.options.get("ignore_punctuation"):
            text = text.translate(str.maketrans("", "", string.punctuation))
        return text.strip() or None


class Numeric(Metric):
    """Numbers compared as numbers: "$1,000.00" equals "1000"; ``tolerance`` is absolute."""

    options_allowed = frozenset({"tolerance"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        tolerance = options.get("tolerance", 0)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0 <= tolerance < math.inf:
            raise ValueError("tolerance must be a finite number >= 0")
        self.tolerance = float(tolerance)

    def normalize(self, text: str) -> str | None:
        return normalize_number(text)

    def verdict(self, extracted: str, sample: Sample) -> Verdict:
        shown, gold = normalize_number(extracted), normalize_number(sample.reference)
        if shown is None or gold is None:
            return Verdict(False, shown or extracted, gold or sample.reference)
        close = shown == gold or (self.tolerance > 0 and math.isclose(float(shown), float(gold), rel_tol=0, abs_tol=self.tolerance))
        return Verdict(close, shown, gold)


class Choice(Metric):
    """The same option letter (case and brackets ignored: "(b)" is B)."""

    def normalize(self, text: str) -> str | None:
        letter = re.match(r"\s*[(\[]?([A-Ja-j])(?![\w'])", text)
        return letter.group(1).upper() if letter else None


class UnitTests(Metric):
    """The extracted code, then the reference (the tests: ``doc_to_target``), run as one
    program in lai's sandbox; right when it exits cleanly. The batch runs in parallel.
    What the sandbox does and does not protect against: lai/sandbox's docstring."""

    options_allowed = frozenset({"timeout_s"})
    executes: ClassVar[bool] = True  # verify's execution check runs a written sample's tests

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        timeout = options.get("timeout_s", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
            raise ValueError("timeout_s must be a number of seconds, 0 < timeout_s <= 600")
        self.timeout_s = float(timeout)

    def verdict_many(self, extracted: list[str | None], samples: list[Sample], responses: list[str]) -> list[Verdict | None]:
        programs = [f"{code}\n\n{s.reference}\n" for code, s in zip(extracted, samples, strict=True) if code is not None]
        results = iter(sandbox.run_many(programs, timeout_s=self.timeout_s))
        out: list[Verdict | None] = []
        for code, sample in zip(extracted, samples, strict=True):
            if code is None:
                out.append(None)
                continue
            result = next(results)
            out.append(Verdict(result.passed, code, sample.reference, reason=explain(result)))
        return out

    def verdict(self, extracted: str, sample: Sample) -> Verdict:
        found = self.verdict_many([extracted], [sample], [extracted])[0]
        assert found is not None
        return found


METRICS: Registry[type[Metric]] = Registry("metric")
METRICS.register("exact_match", ExactMatch)
METRICS.register("numeric", Numeric)
METRICS.register("choice", Choice)
METRICS.register("unit_tests", UnitTests)
METRICS.register("llm_judge", "lai.judge:LLMJudge")  # imported when a task file names it
