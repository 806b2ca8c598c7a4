"""The words every report uses for the steps from errors to training data, defined once.

The funnel, the checks and contamination tables, the terminal summary, report.html and
the dataset card all count samples at some step; before these constants, "passed
format" meant the samples kept after parse in one table and every well-formed sample
in another. Each count now has one name, and :data:`GLOSSARY` says what it means;
the reports print the glossary once.
"""

from __future__ import annotations

from typing import Any

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
)


def well_formed(parse: dict[str, Any]) -> int | None:
    """Well-formed samples of one iteration: parsed ones less those dropped for format."""
    if "parsed" not in parse:
        return None
    return int(parse["parsed"]) - int((parse.get("drop_reasons") or {}).get("format", 0))


def glossary_markdown() -> str:
    """The glossary as a markdown list, printed once per report."""
    return "\n".join(f"- **{term}**: {meaning}" for term, meaning in GLOSSARY)
