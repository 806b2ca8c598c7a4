"""GSM-Plus: GSM8K test questions under eight kinds of perturbation, scored like GSM8K.

Why: GSM-Plus (Li et al., 2024, https://github.com/qtli/GSM-Plus) measures how robust a
model's GSM8K skill is, so it is prompted and judged exactly as :mod:`lai.tasks.gsm8k`
(same prompts, same answer extraction); only the data and the gold answers differ.
Every sample's group is its perturbation type ("numerical substitution", "digit
expansion", "critical thinking", ...), so summaries carry per-type scores.

Rows come in two shapes: the hub's (qintongli/GSM-Plus: ``solution``, ``answer``,
``perturbation_type``) and the GitHub release's (``answer`` is the solution,
``extracted_answer`` the final number, ``type``); both load. The gold is the final
number (``extracted_answer`` / the hub's ``answer``), not the "####" tail of the
solution, which is sometimes malformed in this data ("####44", "#### 36%", "####800 mL").

"Critical thinking" questions had a necessary premise removed: their gold is "None".
- ``paper``: right when the response says the question lacks information (or answers
  "None"/"unknown") without committing to a number after "The answer is"; the prompt is
  GSM8K's, unchanged, so the model is not told that some questions are unanswerable.
- ``lm-eval``: lm-evaluation-harness has no chain-of-thought GSM-Plus task (its
  ``gsm_plus`` is 5-shot "Question:/Answer:" with shots drawn at random from the test
  split itself), so this is gsm8k_cot's protocol from :mod:`lai.tasks.gsm8k` (8-shot CoT
  prompt, stop strings, strict-match and flexible-extract). Its filters only ever
  extract numbers, so, exactly as in lm-eval's ``gsm_plus``, critical-thinking items
  can never be scored right under this protocol.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from lai.data import PoolSource
from lai.records import Sample, Score
from lai.tasks.gsm8k import GradeSchoolMath, extract_answer, normalize_number

#: The gold answer of questions that cannot be answered (GSM-Plus writes "None").
NO_ANSWER = "None"

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
# A number committed to as the final answer: "The answer is 12", "answer is: **$12**".
_COMMITTED = re.compile(r"answer is[:\s]*\**\s*-?\$?\d", re.IGNORECASE)
# Ways of saying the question cannot be answered (after GSM-Plus's own
# extract_pred_ans_none phrase list, plus answering "The answer is None" or "unknown").
_LACKS_INFORMATION = re.compile(
    r"not enough information|insufficient information|missing (?:necessary )?information"
    r"|(?:doesn't|does not|don't|do not) (?:provide|specify|mention|state|give|tell|say)"
    r"|not (?:specified|provided|given|stated|mentioned)|lacks? (?:the )?\w* ?information"
    r"|can ?not (?:be )?(?:determined?|calculated?|answered?|solved?|known)"
    r"|can't (?:be )?(?:determined?|calculated?|answered?|solved?|known)"
    r"|(?:don't|do not) know|unanswerable|impossible to (?:determine|calculate|answer|know)"
    r"|answer is[:\s]*\**\s*(?:none|unknown|undetermined|indeterminate|not determinable)\b",
    re.IGNORECASE,
)


def gold_number(gold: str) -> str:
    """The gold written as GSM8K's extraction writes numbers: "1,000" -> "1000", "3/4" -> "0.75"."""
    number = normalize_number(gold)
    if number is not None:
        return number
    fraction = re.fullmatch(r"(-?\d+)\s*/\s*(\d+)", gold)
    if fraction and int(fraction.group(2)):
        return normalize_number(str(int(fraction.group(1)) / int(fraction.group(2)))) or gold
    found = _NUMBER.search(gold)
    return (normalize_number(found.group()) if found else None) or gold


class GSMPlus(GradeSchoolMath):
    name = "gsm8k_plus"
    pools: ClassVar[dict[str, PoolSource]] = {
        # lm-eval gsm_plus: dataset_path qintongli/GSM-Plus, test_split test.
        "test": PoolSource(
            ("gsm8k_plus/test.jsonl", "gsm8k_plus/test_sample.jsonl"),
            ("question", "answer"),
            ("qintongli/GSM-Plus", None, "test"),
            {"question": (str,), "answer": (str, int, float), "solution": (str,)},
        ),
    }
    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        if "solution" in row:  # hub layout
            solution, gold = str(row["solution"]), str(row["answer"])
            kind = row.get("perturbation_type")
        else:  # GitHub layout; fall back on the solution's "####" tail
            solution = str(row["answer"])
            gold = str(row.get("extracted_answer") or solution.rpartition("####")[2])
            kind = row.get("type")
        gold = gold.strip()
        answerable = gold.lower() not in ("none", "")
        reference = gold_number(gold) if answerable else NO_ANSWER
        return Sample(
            id=f"{self.name}/{pool}/{index}",
            task=self.name,
            question=str(row["question"]).strip(),
            reference=reference,
            meta={
                "solution": solution.strip(),
                # What GSM8K's lm-eval scorer reads the gold from: the dataset's answer as
                # written when it is a plain number (lm-eval compares strings), else ours.
                "raw_answer": f"#### {gold if normalize_number(gold) else reference}",
                "type": str(kind or "unknown"),
                "answerable": answerable,
            },
        )

    def group(self, sample: Sample) -> str | None:
        return str(sample.meta.get("type", "unknown"))

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        if protocol == "lm-eval" or sample.meta.get("answerable", True):
            return super().score(sample, response, protocol)
        return score_unanswerable(response)


def score_unanswerable(response: str) -> Score:
    """Paper protocol for a question with no answer: right iff the response says so."""
    if _COMMITTED.search(response):
        committed = extract_answer(response)
        return Score(
            False,
            committed,
            f"answered {committed}, but the question lacks the information to answer it",
        )
    if _LACKS_INFORMATION.search(response):
        return Score(True, NO_ANSWER, "says the question lacks information, as expected")
    return Score(
        False, None, "does not say the question lacks information (expected no numeric answer)"
    )
