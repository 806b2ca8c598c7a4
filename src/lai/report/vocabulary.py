"""The report package's shared vocabulary: every word and rule the renderers share, once.

``report.md`` (:mod:`lai.report.markdown`), ``report.html`` (:mod:`lai.report.html`), the
terminal summary (:mod:`lai.report.terminal`), ``lai compare`` (:mod:`lai.report.compare`)
and the dataset card (:mod:`lai.export.card`) all count samples at some step of the
funnel, name the strategy, print percentages and changes in points, and make markdown
tables. Each of those is defined here, so the five cannot drift apart:

* the funnel's terms (*well-formed*, *kept after parse*, ...) and their :data:`GLOSSARY`;
  before these constants "passed format" meant the samples kept after parse in one
  table and every well-formed sample in another;
* the strategy's label and words, read by name from what the strategy declares
  (:func:`lai.strategies.strategy_class`), so a new strategy needs no edit here;
* the change of a score in points, the local server's name, the embedder the verify
  stage falls back to, what a table cell may hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lai.config import EMBEDDED_MODEL
from lai.instructor.ledger import cost_of
from lai.records import InstructRecord
from lai.store import RunStore, read_records
from lai.strategies import strategy_class

# ---- the funnel, from errors to training data ---------------------------------------------

ERRORS_FOUND = "errors found"
CONTROL = "held back (control)"
REQUESTS = "requests"
PARSED = "samples parsed"
WELL_FORMED = "well-formed"
KEPT_AFTER_PARSE = "kept after parse"
KEPT_AFTER_VERIFY = "kept after verify"
TRAINED_ON = "trained on"

GLOSSARY: tuple[tuple[str, str], ...] = (
    (ERRORS_FOUND, "training questions the target answered wrong in the collect stage."),
    (CONTROL, "errors held back from the strategy by a seeded draw (`strategy.control_fraction`): the fix rate's control group, never shown to the instructor."),
    (REQUESTS, "requests sent to the instructor to write samples (re-solve requests of the verify stage are counted under cost)."),
    (PARSED, "samples found in the instructor's replies, whatever their checks said; a failed request or an unreadable reply is counted as a dropped reply, not as samples."),
    (WELL_FORMED, "parsed samples that passed the task's format check (a question, a solution and an answer of the right kind), or all parsed samples when `verify.format` is off. Copies and duplicates of the question are still well-formed; the contamination check counts every well-formed sample."),
    (KEPT_AFTER_PARSE, "well-formed samples that are not a copy of the source question or of the prompt's example (`copy`) and not a repeat of another sample (`duplicate`)."),
    (KEPT_AFTER_VERIFY, "samples kept after parse that also passed every check of the verify stage: what training uses."),
    (TRAINED_ON, "examples in the iteration's training set (the samples kept after verify)."),
    ("copy", "a sample, or a diagnosis, that repeats the source question or the example in the prompt template, whole, in part, or with a few words changed (word overlap of 70% or more)."),
    ("no usable diagnosis", "errors whose reply had a diagnosis, but a copy: it repeats the prompt template's example diagnosis or the question. Such errors are grouped together rather than under the copied text."),
)  # fmt: skip


def well_formed(parse: Mapping[str, Any]) -> int | None:
    """Well-formed samples of one iteration: parsed ones less those dropped for format."""
    if "parsed" not in parse:
        return None
    return int(parse["parsed"]) - int((parse.get("drop_reasons") or {}).get("format", 0))


def glossary_markdown() -> str:
    """The glossary as a markdown list, printed once per report."""
    return "\n".join(f"- **{term}**: {meaning}" for term, meaning in GLOSSARY)


def reasons_cell(counts: Mapping[str, int] | None) -> str:
    """Drop reasons with their counts, most frequent first: "duplicate 4, format 2"."""
    items = sorted((counts or {}).items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{reason or 'unknown'} {n}" for reason, n in items) or "-"


def contamination_rows(summaries: Mapping[int, Mapping[str, Any]]) -> list[list[Any]]:
    """[iteration, benchmark, checked, contaminated, rate] from each verify stage's summary."""
    return [
        [k, bench, found.get("checked", "-"), found.get("contaminated", "-"),
         "-" if found.get("rate") is None else pct(found["rate"])]  # fmt: skip
        for k, s in sorted(summaries.items())
        for bench, found in sorted(((s.get("verify") or {}).get("contamination") or {}).items())
    ]


#: The fix rate's groups of errors, in the order every report shows them.
FIX_GROUPS = ("targeted", "control", "other")


# ---- the strategy, by the name in a run's config ------------------------------------------


def strategy_name(settings: Mapping[str, Any] | None) -> str:
    """The strategy of a run's saved ``strategy`` section (``le`` when it names none)."""
    return str((settings or {}).get("name", "le"))


def strategy_label(settings: Mapping[str, Any] | None) -> str:
    """The strategy with the settings that tell two runs of it apart: ``lec (k=2)``."""
    settings = settings or {}
    return strategy_class(strategy_name(settings)).label(settings)


def strategy_words(settings: Mapping[str, Any] | None) -> str:
    """What the strategy does, in words: its declared description with its settings."""
    settings = settings or {}
    return strategy_class(strategy_name(settings)).describe(settings)


def strategy_description(settings: Mapping[str, Any] | None) -> str:
    """The strategy's declared description alone, without its settings (the dataset card's
    words; report.md adds the settings, :func:`strategy_words`)."""
    name = strategy_name(settings)
    return strategy_class(name).description or name


def trains_on_real_rows(settings: Mapping[str, Any] | None) -> bool:
    """True for a baseline that trains on real pool rows and never asks an instructor."""
    return not strategy_class(strategy_name(settings)).uses_instructor


# ---- the instructor --------------------------------------------------------------------------


def local_server_name(local: Mapping[str, Any]) -> str:
    """What serves a local instructor (``instructor.local.server``; runs saved before it
    existed used llama.cpp): the report and the dataset card say the same."""
    return "vLLM" if local.get("server") == "vllm" else "llama.cpp"


def embedded_instructor(config: Mapping[str, Any]) -> bool:
    """Whether the instructor is the embedded SmolLM2 on a local server: the demo's weak
    instructor, which report.md and the dataset card both warn about."""
    local = (config.get("instructor") or {}).get("local") or {}
    return bool(local.get("enabled")) and local.get("model") == EMBEDDED_MODEL


def dedup_embedder(config: Mapping[str, Any]) -> str | None:
    """The embedder of near duplicates and copies: ``verify.embedder``, else the strategy's."""
    return (config.get("verify") or {}).get("embedder") or (config.get("strategy") or {}).get("embedder")


# ---- cost ------------------------------------------------------------------------------------


def resolve_usage(store: RunStore, k: int, prices: dict[str, Any]) -> dict[str, Any] | None:
    """Tokens and cost of iteration ``k``'s re-solve requests (verify stage), or None."""
    path = store.path(k, "verify_instruct.jsonl")
    if not path.exists():
        return None
    records = read_records(path, InstructRecord)
    return {
        "models": sorted({r.model for r in records if r.model}),
        "ok": sum(r.status == "ok" for r in records),
        "failed": sum(r.status != "ok" for r in records),
        "prompt_tokens": sum(r.prompt_tokens for r in records),
        "completion_tokens": sum(r.completion_tokens for r in records),
        "cost_usd": sum(cost_of(prices, r.model, r.prompt_tokens, r.completion_tokens) for r in records),
    }


# ---- numbers and cells -----------------------------------------------------------------------


def pct(value: float) -> str:
    """A share as a percentage with one decimal: ``0.125`` -> ``12.5%``."""
    return f"{100 * value:.1f}%"


def change_points(after: float, before: float) -> float:
    """The change of a score (a share) in percentage points."""
    return 100 * (after - before)


def points_text(points: float) -> str:
    """A change in points, signed, one decimal: ``+2.5``."""
    return f"{points:+.1f}"


def trained_on_cell(train: Mapping[str, Any]) -> str:
    """The funnel's last step: examples trained on, or why the model was not trained."""
    if not train:
        return "-"
    if train.get("trained"):
        return str(train.get("examples", 0))
    if train.get("skipped"):
        return f"0 ({train['skipped']})"
    return f"{train.get('examples', 0)} (model not changed)"


def cell(value: Any) -> str:
    """A table cell: one line, with pipes escaped so the row keeps its columns."""
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
