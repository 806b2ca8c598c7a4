"""GSM8K: grade-school math word problems, scored by exact match on the final number.

Protocols:
- ``paper``: a zero-shot chat prompt asking for step-by-step reasoning that ends with
  "The answer is N"; the answer is the number after the last "The answer is" when
  present, else the last number in the response (how the LLMs-as-Instructors paper
  judges GSM8K).
- ``lm-eval``: lm-evaluation-harness's ``gsm8k_cot``: the 8 chain-of-thought exemplars of
  Wei et al. (2022) as a plain-text "Q: ... A: ..." prompt, generation stopped at "Q:",
  and both of its answer filters: ``strict-match`` (the number after "The answer is",
  the primary score here) and ``flexible-extract`` (the last number in the response).

Reference: Cobbe et al., 2021, https://github.com/openai/grade-school-math.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from lai.data import PoolSource
from lai.errors import DataError
from lai.records import Sample, Score
from lai.tasks.base import GenerationSpec, Prompt, ResolveRule, SampleRejected, Task

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer is[:\s]*\**\s*(-?\$?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(-?\$?\d[\d,]*(?:\.\d+)?)")

PROMPT = (
    "Solve the following math problem. Think it through step by step, then finish with a "
    "line of the form 'The answer is N', where N is the final number.\n\n"
    "Problem: {question}"
)


# lm-eval gsm8k_cot's filters and exact-match normalisation, as its task config defines them.
LM_EVAL_STRICT = re.compile(r"The answer is (\-?[0-9\.\,]+).")
LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
LM_EVAL_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
LM_EVAL_STOP = ("Q:", "</s>", "<|im_end|>")


@cache
def lm_eval_fewshot() -> str:
    """The 8-shot prefix lm-eval builds for gsm8k_cot (target delimiter " ", shots joined by a blank line)."""
    text = resources.files("lai.tasks").joinpath("fewshot/gsm8k_cot.jsonl").read_text(encoding="utf-8")
    shots = [json.loads(line) for line in text.splitlines() if line.strip()]
    return "".join(f"Q: {shot['question']}\nA: {shot['target']}\n\n" for shot in shots)


def lm_eval_filter(pattern: re.Pattern[str], response: str, group_select: int) -> str:
    """lm-eval's RegexFilter: the selected match, the first non-empty group, else "[invalid]"."""
    found = pattern.findall(response)
    if not found:
        return "[invalid]"
    match = found[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), "[invalid]")
    return match.strip()


def lm_eval_normalize(text: str) -> str:
    for pattern in LM_EVAL_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def normalize_number(text: str) -> str | None:
    """'$1,234.50' -> '1234.5'; '7.0' -> '7'; not a number -> None."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def extract_answer(response: str) -> str | None:
    for pattern in (_ANSWER_IS, _HASHES):
        found = pattern.findall(response)
        if found:
            return normalize_number(found[-1])
    numbers = _NUMBER.findall(response)
    return normalize_number(numbers[-1]) if numbers else None


#: The answer is the worked solution ending in "#### N", so it must be text.
ROW_TYPES: dict[str, tuple[type, ...]] = {"question": (str,), "answer": (str,)}


#: A re-solve reply: its reasoning, then the final number.
RESOLVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "answer": {"type": "number"}},
    "required": ["reasoning", "answer"],
}


class GradeSchoolMath(Task):
    """What GSM8K and GSM-Plus share: the prompt, the stop strings and the answer
    extraction per protocol. The instructor side is GSM8K's alone."""

    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        self.check_protocol(protocol)
        if protocol == "lm-eval":
            return lm_eval_fewshot() + f"Q: {sample.question}\nA:"
        return [{"role": "user", "content": PROMPT.format(question=sample.question)}]

    def generation(self, protocol: str = "paper") -> GenerationSpec:
        return GenerationSpec(stop=LM_EVAL_STOP) if protocol == "lm-eval" else GenerationSpec()

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        if protocol == "lm-eval":
            return self._score_lm_eval(sample, response)
        extracted = extract_answer(response)
        if extracted is None:
            return Score(False, None, "no number found in the response")
        if extracted == sample.reference:
            return Score(True, extracted, f"final answer {extracted} matches")
        return Score(False, extracted, f"final answer {extracted}, expected {sample.reference}")

    def _score_lm_eval(self, sample: Sample, response: str) -> Score:
        gold = lm_eval_normalize(sample.meta.get("raw_answer", sample.reference).split("####")[-1].strip())
        strict = lm_eval_filter(LM_EVAL_STRICT, response, 0)
        flexible = lm_eval_filter(LM_EVAL_FLEXIBLE, response, -1)
        verdicts = {
            "strict-match": lm_eval_normalize(strict) == gold,
            "flexible-extract": lm_eval_normalize(flexible) == gold,
        }
        correct = verdicts["strict-match"]
        reason = f"strict-match {strict!r} vs {gold!r}: {'right' if correct else 'wrong'}"
        return Score(correct, strict, reason, metrics=verdicts)

    def normalize_answer(self, text: str) -> str | None:
        """A number: "$1,000.00" -> "1000"; the last number of a sentence."""
        text = text.strip()
        return normalize_number(text) or extract_answer(text)


class GSM8K(GradeSchoolMath):
    name = "gsm8k"
    instructor_templates: ClassVar[dict[str, str]] = {"le": "le_math", "lec": "lec_math", "random": "random_math"}
    resolve_rule: ClassVar[ResolveRule | None] = ResolveRule("resolve_math", RESOLVE_SCHEMA)
    pools: ClassVar[dict[str, PoolSource]] = {
        "train": PoolSource(
            ("gsm8k/train.jsonl",), ("question", "answer"), ("openai/gsm8k", "main", "train"), ROW_TYPES
        ),
        "test": PoolSource(
            ("gsm8k/test.jsonl", "gsm8k/test_sample.jsonl"), ("question", "answer"),
            ("openai/gsm8k", "main", "test"), ROW_TYPES,
        ),  # fmt: skip
    }
    sample_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "solution": {"type": "string"},
            "answer": {"type": "number"},
        },
        "required": ["question", "solution", "answer"],
    }

    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        if "####" not in str(row["answer"]):
            # Without it the whole solution became the reference and every answer was wrong.
            raise DataError(f"{self.name}/{pool} row {index}: its answer has no final '#### N' line")
        solution, _, final = str(row["answer"]).rpartition("####")
        reference = normalize_number(final) or final.strip()
        return Sample(
            id=f"{self.name}/{pool}/{index}",
            task=self.name,
            question=str(row["question"]).strip(),
            reference=reference,
            meta={"solution": solution.strip(), "raw_answer": str(row["answer"])},
        )

    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        question = str(item.get("question") or "").strip()
        solution = str(item.get("solution") or "").strip()
        answer_text = str(item.get("answer") if item.get("answer") is not None else "").strip()
        if len(question) < 10:
            raise SampleRejected("missing question")
        if not any(ch.isdigit() for ch in question):
            raise SampleRejected("question has no numbers (placeholder or not a math problem)")
        if not solution:
            raise SampleRejected("missing solution")
        answer = normalize_number(answer_text) or extract_answer(answer_text)
        if answer is None:
            raise SampleRejected("final answer is not a number")
        return question, solution, answer

    def reference_sample(self, sample: Sample) -> tuple[str, str, str] | None:
        solution = str(sample.meta.get("solution") or "")
        return (sample.question, solution, sample.reference) if solution else None

    def training_target(self, solution: str, answer: str) -> str:
        # Drop GSM8K's calculator annotations ("<<48/2=24>>") so targets read naturally.
        solution = re.sub(r"<<[^>]*>>", "", solution).strip()
        return f"{solution}\nThe answer is {answer}."
