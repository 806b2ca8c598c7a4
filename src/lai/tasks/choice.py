"""Multiple-choice benchmarks (MMLU, ARC-Challenge), scored on the chosen option letter.

Both are "a question, lettered options, one gold letter", so loading, the paper prompt,
letter extraction and the instructor side are shared; the two classes differ only in
their pools and in lm-evaluation-harness's exact contexts and continuations.

Protocols:
- ``paper``: a zero-shot chat prompt (our wording) asking for brief reasoning that ends
  with "The answer is (X)"; accuracy on the extracted letter, as the LLMs-as-Instructors
  paper judges MMLU and ARC.
- ``lm-eval``: lm-eval 0.4.13's ``mmlu_<subject>`` and ``arc_challenge``
  (``output_type: multiple_choice``, ranked by log-likelihood), zero-shot by default as
  there; metric ``acc``, and for ARC also ``acc_norm`` (:func:`lm_eval_acc_norm`).

Local rows (``A``..``E`` fields, or ``1``..``5`` for ARC's digit-labelled rows, a letter or
digit ``answer``), ARC's own JSONL (``question: {stem, choices}``, ``answerKey``) and hub
rows (MMLU: ``choices`` list + int ``answer``; ARC: ``choices`` {text, label} +
``answerKey``, "1".."4" in 22 rows of the test split) become one :class:`Sample`: ``question`` is the stem followed by its lettered options, so the
instructor, the records and training prompts always show them; ``reference`` is the gold
letter; ``meta`` keeps the raw stem and options for lm-eval's exact contexts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from lai.data import PoolSource
from lai.errors import ConfigError, DataError
from lai.records import Sample, Score
from lai.scoring import lm_eval_acc_norm  # noqa: F401 - part of this module's API
from lai.tasks.base import Choices, GenerationSpec, Prompt, ResolveRule, SampleRejected, Task

LETTERS = "ABCDEFGHIJ"  # the same letters as lai.scoring.LETTERS
MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {}.\n\n"

PROMPT = (
    "Here is a multiple-choice question. Think it over briefly, then end your reply with a "
    "line of the form 'The answer is (X)', where X is the letter of the option you pick.\n\n"
    "{question}"
)

# An explicit answer phrase ("The answer is (B)", "Answer: d", "the correct option is C",
# "\boxed{C}"): the strongest evidence, and the last one wins so self-corrections count.
_ANSWER_PHRASE = re.compile(
    r"\b(?:answer|option|choice)\b\**\s*(?:is|was|would\s+be|should\s+be|must\s+be|:|=)"
    r"\s*[:\-]?\s*(?:option|choice|letter)?[\s*_(\[{]*([A-Ja-j])(?![\w'])",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-J])\)?")
# A lowercase letter only counts when nothing word-like follows ("answer is a trick" is not A).
_LOWERCASE_END = re.compile(r"\s*(?:$|[).,:;!\]*}])")
_BOLD = re.compile(r"\*\*\s*[(\[]?([A-J])(?![\w'])")  # "**C**", "**(C)**", "**C. Paris**"
_BARE = re.compile(r"^\s*[(\[]?([A-Ja-j])[)\]]?\.?\s*$")  # the whole reply is "C", "(b)", "D."
_LEADING = re.compile(r"^\s*[(\[]?([A-J])(?:[)\].:]|\s*$)")  # "B) Paris", "D. 42", "(A) ..."
_PARENTHESISED = re.compile(r"\(([A-J])\)")
_OPTION_LINE = re.compile(r"^([A-J])\. (.*)$")


def render_question(stem: str, options: Mapping[str, str]) -> str:
    """The stem and its lettered options, one per line: what people and models are shown."""
    return stem.strip() + "\n" + "\n".join(f"{letter}. {text}" for letter, text in options.items())


def parse_question(question: str) -> tuple[str, dict[str, str]]:
    """Undo :func:`render_question`: the trailing "A. ..", "B. .." lines become options."""
    lines = question.splitlines()
    options: dict[str, str] = {}
    while lines and (match := _OPTION_LINE.match(lines[-1])):
        options[match.group(1)] = match.group(2)
        lines.pop()
    ordered = dict(sorted(options.items()))
    if "".join(ordered) != LETTERS[: len(ordered)]:  # not a clean A, B, C... run
        return question.strip(), {}
    return "\n".join(lines).strip(), ordered


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .")


def _answer_phrase(response: str, letters: str) -> str | None:
    """The letter of the last explicit answer phrase, if any."""
    found: list[tuple[int, str]] = []
    for match in _ANSWER_PHRASE.finditer(response):
        letter = match.group(1)
        if letter.islower() and not _LOWERCASE_END.match(response, match.end()):
            continue
        found.append((match.start(), letter.upper()))
    found += [(m.start(), m.group(1)) for m in _BOXED.finditer(response)]
    valid = [letter for _, letter in sorted(found) if letter in letters]
    return valid[-1] if valid else None


def extract_letter(response: str, options: Mapping[str, str]) -> str | None:
    """The option letter a free-text reply chose, or None.

    Evidence, strongest first: the last explicit answer phrase; the last bold letter; a
    reply that is or starts with a letter ("B) Paris"); a single distinct "(X)"; a reply
    (or its last line) that repeats exactly one option's text.
    """
    letters = "".join(options)
    if letter := _answer_phrase(response, letters):
        return letter
    bold = [m.group(1) for m in _BOLD.finditer(response) if m.group(1) in letters]
    if bold:
        return bold[-1]
    for pattern in (_BARE, _LEADING):
        match = pattern.match(response)
        if match and match.group(1).upper() in letters:
            return match.group(1).upper()
    marked = {m.group(1) for m in _PARENTHESISED.finditer(response)} & set(letters)
    if len(marked) == 1:
        return marked.pop()
    lines = [line for line in response.splitlines() if line.strip()]
    for text in (response, lines[-1] if lines else ""):
        hits = [letter for letter, option in options.items() if _norm(option) == _norm(text)]
        if len(hits) == 1:
            return hits[0]
    return None


#: A re-solve reply: its reasoning, then one option letter.
RESOLVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "answer": {"type": "string", "enum": list("ABCD")}},
    "required": ["reasoning", "answer"],
}


class MultipleChoiceTask(Task):
    """Shared by MMLU and ARC; subclasses set pools and lm-eval's exact context."""

    instructor_templates: ClassVar[dict[str, str]] = {"le": "le_choice", "lec": "lec_choice", "random": "random_choice"}
    resolve_rule: ClassVar[ResolveRule | None] = ResolveRule("resolve_choice", RESOLVE_SCHEMA)
    sample_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "options": {
                "type": "object",
                "properties": {letter: {"type": "string"} for letter in "ABCD"},
                "required": list("ABCD"),
                "additionalProperties": False,
            },
            "answer": {"type": "string", "enum": list("ABCD")},
            "explanation": {"type": "string"},
        },
        "required": ["question", "options", "answer", "explanation"],
    }

    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        texts, labels = self._options(row)
        native = row.get("id", index)
        question = row["question"]
        stem = str(question.get("stem", "")) if isinstance(question, Mapping) else str(question)
        gold = self._gold_index(row.get("answerKey", row.get("answer")), labels, len(texts))
        if len(texts) < 2 or gold is None or len(texts) > len(LETTERS):
            raise DataError(
                f"{self.name}/{pool} row {native}: cannot read its options and answer "
                f"({len(texts)} options, answer {row.get('answerKey', row.get('answer'))!r})"
            )
        options = dict(zip(LETTERS, texts, strict=False))
        return Sample(
            id=f"{self.name}/{pool}/{native}",
            task=self.name,
            question=render_question(stem, options),
            reference=LETTERS[gold],
            meta={"options": options, "subject": row.get("subject"), "stem": stem},
        )

    @staticmethod
    def _options(row: dict[str, Any]) -> tuple[list[str], list[str] | None]:
        """Option texts and their labels, from every layout the official data comes in.

        - ARC's own JSONL: ``question: {stem, choices: [{text, label}]}``;
        - the hub: ARC ``choices: {text: [...], label: [...]}``, MMLU ``choices: [...]``;
        - local JSONL: one field per option, ``A``..``E``, or ``1``..``5`` for the ARC rows
          whose labels are digits (e.g. NYSEDREGENTS_2008_8_34), with an optional ``label`` list.
        Labels are kept as written; the gold answer is matched against them, and options
        are always shown to the model as letters, as lm-evaluation-harness does.
        """
        question = row.get("question")
        choices = question.get("choices") if isinstance(question, Mapping) else row.get("choices")
        if isinstance(choices, Mapping):  # ARC hub: {"text": [...], "label": [...]}
            return [str(t) for t in choices.get("text", [])], [str(label) for label in choices.get("label", [])]
        if isinstance(choices, list) and all(isinstance(c, Mapping) for c in choices):  # ARC JSONL
            return [str(c.get("text", "")) for c in choices], [str(c.get("label", "")) for c in choices]
        if isinstance(choices, list):  # MMLU hub: a list of option texts
            return [str(t) for t in choices], None
        keys = LETTERS if row.get("A") not in (None, "") else "123456789"
        texts = []
        for key in keys:  # ARC rows may stop at D or go to E
            if row.get(key) in (None, ""):
                break
            texts.append(str(row[key]))
        labels = [str(label) for label in row["label"]] if isinstance(row.get("label"), list) else None
        if labels is None and keys != LETTERS:
            labels = list(keys[: len(texts)])
        return texts, labels

    @staticmethod
    def _gold_index(answer: Any, labels: list[str] | None, n: int) -> int | None:
        # An int is a 0-based index (MMLU hub); a string is a label, a letter, or ARC's
        # 1-based digit key ("3" is the third option when the row lists no labels).
        key = str(answer).strip()
        if isinstance(answer, int) and not isinstance(answer, bool):
            index = answer
        elif labels and key.upper() in [label.upper() for label in labels]:
            index = [label.upper() for label in labels].index(key.upper())
        elif len(key) == 1 and key.upper() in LETTERS:
            index = LETTERS.index(key.upper())
        else:
            index = int(key) - 1 if key.isdigit() else -1
        return index if 0 <= index < n else None

    # ---- prompts ----------------------------------------------------------------------

    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        self.check_protocol(protocol)
        if protocol == "lm-eval":  # only used if someone generates under lm-eval
            return self.lm_eval_context(sample)
        return [{"role": "user", "content": PROMPT.format(question=sample.question)}]

    def lm_eval_context(self, sample: Sample) -> str:
        raise NotImplementedError

    def lm_eval_continuations(self, sample: Sample) -> list[str]:
        """lm-eval prepends target_delimiter " " to each doc_to_choice string."""
        return [f" {letter}" for letter in sample.meta["options"]]

    def choices(self, sample: Sample, protocol: str = "paper") -> Choices | None:
        self.check_protocol(protocol)
        letters = list(sample.meta["options"])
        gold = letters.index(sample.reference)
        if protocol == "lm-eval":
            return Choices(self.lm_eval_context(sample), self.lm_eval_continuations(sample), gold)
        # Chat context: the target renders the messages (with its generation prompt) and
        # the bare letter follows, as the first token of the assistant's reply.
        return Choices(self.prompt(sample, "paper"), letters, gold)

    def generation(self, protocol: str = "paper") -> GenerationSpec:
        # lm-eval defines no generation for multiple_choice; stop before a next question.
        if protocol == "lm-eval":
            return GenerationSpec(stop=("\n\n", "Question:"), max_new_tokens=64)
        return GenerationSpec()

    def scoring_mode(self, protocol: str = "paper") -> str:
        return "loglikelihood" if protocol == "lm-eval" else "generate"

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        self.check_protocol(protocol)
        letter = extract_letter(response, sample.meta["options"])
        if letter is None:
            return Score(False, None, "no option letter found")
        if letter == sample.reference:
            return Score(True, letter, f"chose {letter}, correct")
        return Score(False, letter, f"chose {letter}, expected {sample.reference}")

    # ---- the instructor side ------------------------------------------------------------

    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        """Return (question with its lettered options, explanation, answer letter).

        The options travel inside the question text, so the training prompt
        ``prompt(training_sample(question))`` shows them exactly as for a real sample.
        """
        stem = str(item.get("question") or "").strip()
        if not stem:
            raise SampleRejected("missing question")
        raw = item.get("options")
        if isinstance(raw, list):  # tolerate a plain list of four texts
            raw = dict(zip(LETTERS, raw, strict=False))
        if not isinstance(raw, Mapping):
            raise SampleRejected("options are not a mapping of letters to texts")
        options = {
            str(k).strip().strip("().").upper(): " ".join(str(v).split()) for k, v in raw.items()
        }
        if len(raw) != 4 or sorted(options) != list("ABCD"):
            raise SampleRejected("not exactly 4 options A-D")
        if not all(options.values()):
            raise SampleRejected("an option is empty")
        if len({_norm(text) for text in options.values()}) != 4:
            raise SampleRejected("options are not distinct")
        answer = str(item.get("answer") or "").strip().strip("().").upper()
        if answer not in options:
            raise SampleRejected("answer is not exactly one of A-D")
        explanation = str(item.get("explanation") or "").strip()
        concluded = _answer_phrase(explanation, "ABCD")
        if concluded and concluded != answer:  # training on it would teach a contradiction
            raise SampleRejected(f"explanation concludes {concluded}, answer says {answer}")
        return render_question(stem, dict(sorted(options.items()))), explanation, answer

    def training_target(self, solution: str, answer: str) -> str:
        body = solution.strip()
        return f"{body}\nThe answer is ({answer})." if body else f"The answer is ({answer})."

    def normalize_answer(self, text: str) -> str | None:
        """An option letter: "(b)" or "B." -> "B"."""
        letter = re.match(r"\(?([A-Da-d])\b", text.strip())
        return letter.group(1).upper() if letter else None

    def reference_sample(self, sample: Sample) -> tuple[str, str, str] | None:
        # The question already carries its lettered options; real rows have no explanation.
        return sample.question, "", sample.reference

    def training_sample(self, question: str) -> Sample:
        stem, options = parse_question(question)
        return Sample(
            id="generated",
            task=self.name,
            question=question,
            reference="",
            meta={"options": options, "subject": None, "stem": stem},
        )


class MMLU(MultipleChoiceTask):
    """MMLU (Hendrycks et al., 2021): 57 subjects, four options each."""

    name = "mmlu"
    _fields = ("question", "answer")
    _types: ClassVar[dict[str, tuple[type, ...]]] = {
        "question": (str,), "answer": (str, int), **{letter: (str, int, float) for letter in "ABCD"},
    }
    pools: ClassVar[dict[str, PoolSource]] = {
        # The local file is dev + validation (1816 rows); datasets reads "dev+validation"
        # as the union of both splits (in the other order, so row ids differ by source).
        "train": PoolSource(("mmlu/train.jsonl",), _fields, ("cais/mmlu", "all", "dev+validation"), _types),
        "test": PoolSource(("mmlu/test.jsonl",), _fields, ("cais/mmlu", "all", "test"), _types),
        # lm-eval's fewshot_split; read only when few-shot examples are asked for.
        "dev": PoolSource(("mmlu/dev.jsonl",), _fields, ("cais/mmlu", "all", "dev"), _types),
    }

    def __init__(self, fewshot: int = 0, data_dir: Path | None = None) -> None:
        """``fewshot``: lm-eval's --num_fewshot; its yaml sets none, so the default is 0."""
        if not 0 <= fewshot <= 5:
            raise ConfigError(
                f"mmlu fewshot must be 0..5, got {fewshot}", hint="dev has 5 a subject"
            )
        self.fewshot = fewshot
        self._data_dir = data_dir
        self._dev: dict[str, list[Sample]] | None = None

    def group(self, sample: Sample) -> str | None:
        return sample.meta.get("subject")

    def lm_eval_context(self, sample: Sample) -> str:
        # The subject's yaml description (underscores as spaces), then the first_n dev shots,
        # each followed by target_delimiter " ", its letter and fewshot_delimiter "\n\n".
        subject = sample.meta.get("subject")
        description = MMLU_DESCRIPTION.format(subject.replace("_", " ")) if subject else ""
        shots = "".join(f"{self._doc_to_text(s)} {s.reference}\n\n" for s in self._shots(subject))
        return description + shots + self._doc_to_text(sample)

    @staticmethod
    def _doc_to_text(sample: Sample) -> str:
        # doc_to_text: "{{question.strip()}}\nA. {{choices[0]}}\n...D. {{choices[3]}}\nAnswer:"
        options = "".join(f"\n{letter}. {text}" for letter, text in sample.meta["options"].items())
        return f"{sample.meta['stem'].strip()}{options}\nAnswer:"

    def _shots(self, subject: str | None) -> list[Sample]:
        if not self.fewshot or not subject:
            return []
        if self._dev is None:
            self._dev = {}
            for shot in self.load("dev", data_dir=self._data_dir):
                self._dev.setdefault(shot.meta["subject"], []).append(shot)
        shots = self._dev.get(subject, [])[: self.fewshot]
        if len(shots) < self.fewshot:
            raise DataError(
                f"mmlu dev split has {len(shots)} examples for {subject}, need {self.fewshot}"
            )
        return shots


class ARCChallenge(MultipleChoiceTask):
    """ARC-Challenge (Clark et al., 2018): grade-school science, 3-5 options."""

    name = "arc_challenge"
    _types: ClassVar[dict[str, tuple[type, ...]]] = {
        "id": (str, int), "question": (str, dict), "answer": (str, int), "answerKey": (str, int),
    }
    pools: ClassVar[dict[str, PoolSource]] = {
        "test": PoolSource(
            ("arc/test.jsonl", "arc/test_sample.jsonl"),
            ("id", "question"),
            ("allenai/ai2_arc", "ARC-Challenge", "test"),
            _types,
        ),
        "train": PoolSource(
            ("arc/train.jsonl",), ("id", "question"), ("allenai/ai2_arc", "ARC-Challenge", "train"), _types
        ),
    }

    def lm_eval_context(self, sample: Sample) -> str:
        return f"Question: {sample.meta['stem']}\nAnswer:"  # doc_to_text; no strip in the yaml

    def lm_eval_continuations(self, sample: Sample) -> list[str]:
        # doc_to_choice: "{{choices.text}}": the option texts, after target_delimiter " ".
        return [f" {text}" for text in sample.meta["options"].values()]
