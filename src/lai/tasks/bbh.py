"""BIG-Bench Hard: 27 hard BIG-Bench subtasks, scored by exact match after "So the answer is".

Why chain of thought: BBH was introduced (Suzgun et al., 2022) to show that these tasks
need step-by-step reasoning, with one official 3-shot CoT prompt per subtask. Both
protocols use those prompts, read from ``<data folder>/bbh/cot-prompts/<subtask>.txt``
(the files of suzgunmirac/BIG-Bench-Hard: a canary line, ``-----``, a one-paragraph
task description, then three "Q: ...\\nA: Let's think step by step. ..." exemplars):

- ``paper``: one chat message, the official prompt text followed by the question laid
  out like the exemplars (``Q: {input}\\nA: Let's think step by step.``), as the BBH
  reference code prompts; the answer is the last "the answer is X" phrase, read
  tolerantly ("(B)", "B" and "(B) 12/25/1937" all mean option (B); case, surrounding
  markup and a trailing period are ignored).
- ``lm-eval``: lm-evaluation-harness's ``bbh_cot_fewshot``: the description, the three
  exemplars as ``Q: {input}\\nA: Let's think step by step.\\n{target}`` each followed by
  a blank line, then the question in the same layout; generation stops at "</s>", "Q"
  or a blank line (at most 1024 tokens), the answer is its ``get-answer`` regex filter
  and the metric a plain, case-sensitive exact match with the target.

Every sample's group is its subtask, so summaries carry the per-subtask scores and their
macro average (the usual BBH headline number).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from lai.data import PoolSource, default_data_dir, load_pool_rows
from lai.errors import DataError
from lai.records import Sample, Score
from lai.tasks.base import GenerationSpec, Prompt, Task
from lai.tasks.gsm8k import lm_eval_filter, normalize_number

SUBTASKS: tuple[str, ...] = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)

COT_CUE = "A: Let's think step by step."

# lm-eval bbh/cot_fewshot/_cot_fewshot_template_yaml: generation_kwargs and the
# "get-answer" filter (regex, then take_first); exact_match without ignore_case.
LM_EVAL_STOP = ("</s>", "Q", "\n\n")
LM_EVAL_MAX_TOKENS = 1024
LM_EVAL_ANSWER = re.compile(r"(?<=the answer is )(.*)(?=.)")

# Paper protocol: the text after the last "the answer is" (any case, an optional colon).
_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_CHOICE = re.compile(r"^\([A-Z]\)$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


# Where each subtask's rows live: a full file, else the 5-row sample, else the hub. The
# hub copy is the one lm-eval 0.4.13 reads (lukaemon/bbh is only a loading script, which
# ``datasets`` >= 4 no longer runs); same configs, split and fields. "{subtask}" is filled in
# per subtask by source_for, since a PoolSource names one file.
POOL_TEMPLATE = PoolSource(
    ("bbh/{subtask}.jsonl", "bbh/{subtask}.sample.jsonl"),
    ("input", "target"),
    ("SaylorTwift/bbh", "{subtask}", "test"),
    {"input": (str,), "target": (str, int)},
)


def source_for(subtask: str, template: PoolSource = POOL_TEMPLATE) -> PoolSource:
    """The concrete PoolSource of one subtask."""
    hub = template.hub and (
        template.hub[0],
        (template.hub[1] or "").format(subtask=subtask),
        template.hub[2],
    )
    return PoolSource(
        tuple(f.format(subtask=subtask) for f in template.files), template.required, hub, template.types
    )


@cache
def parse_cot_prompt(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split an official prompt (header removed) into its description and (input, target) shots.

    lm-eval's yaml stores the same shots, with the target starting after the CoT cue's
    line break; sports_understanding's file has a space there instead, so we re-lay them out.
    """
    description, *shots = text.split("\n\nQ: ")
    pairs = []
    for shot in shots:
        question, cue, target = shot.partition("\n" + COT_CUE)
        if not cue:
            raise ValueError(f"exemplar without {COT_CUE!r}: {shot[:60]!r}")
        pairs.append((question, target.lstrip()))
    if not pairs:
        raise ValueError("no 'Q: ...' exemplars")
    return description, tuple(pairs)


def read_cot_prompt(path: Path) -> str:
    """The official prompt without its canary header (everything before the ``-----`` line)."""
    if not path.is_file():
        raise DataError(f"BBH chain-of-thought prompt not found: {path}")
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    body = text.split("\n-----\n", 1)[-1].strip()
    try:
        parse_cot_prompt(body)
    except ValueError as error:
        raise DataError(f"{path} is not a BBH CoT prompt ({error})") from None
    return body


def lm_eval_prompt(cot_prompt: str, question: str) -> str:
    """The context lm-eval builds: description + "\\n\\n", shots + "\\n\\n", target delimiter ""."""
    description, shots = parse_cot_prompt(cot_prompt)
    fewshot = "".join(f"Q: {q}\n{COT_CUE}\n{a}\n\n" for q, a in shots)
    return f"{description}\n\n{fewshot}Q: {question}\n{COT_CUE}\n"


def extract_answer(response: str, reference: str) -> str | None:
    """The answer after the last "the answer is", written like ``reference`` (paper protocol)."""
    # A model that goes on to invent the next exemplar would otherwise be read from it.
    text = response.split("\n\nQ:")[0]
    found = list(_ANSWER_IS.finditer(text))
    if not found:
        return None
    answer = text[found[-1].end() :].lstrip().removeprefix(":").lstrip().split("\n", 1)[0]
    # The rest of that line up to the end of the sentence ("Yes. Because ..." -> "Yes").
    answer = re.split(r"\.\s", answer, maxsplit=1)[0].replace("**", "").strip().strip("\"'`")
    answer = answer.strip().rstrip(".").strip()
    if _CHOICE.match(reference):
        # "(B)", "(B) 12/25/1937", "B", "B)" and "B." all name option (B); "A hexagon" does not.
        letter = re.search(r"\(([A-Z])\)", answer) or re.match(r"([A-Z])(?:[.):]|$)", answer)
        return f"({letter.group(1)})" if letter else answer
    if normalize_number(reference) is not None:
        number = _NUMBER.search(answer)  # "6", "6 items", "6." -> "6"
        return normalize_number(number.group()) if number else answer
    return answer


def _canonical(text: str, subtask: str) -> str:
    """Case- and spacing-blind; dyck brackets compare without spaces, word lists without commas."""
    text = text.lower().replace(",", " ") if subtask == "word_sorting" else text.lower()
    return "".join(text.split()) if subtask == "dyck_languages" else " ".join(text.split())


class BBH(Task):
    name = "bbh"
    # One pool over all 27 subtasks, declared here so config validation sees its name.
    pools: ClassVar[dict[str, PoolSource]] = {"test": POOL_TEMPLATE}

    def __init__(self) -> None:
        self._cot_prompts: dict[str, str] = {}  # subtask -> official prompt, filled by load()

    def read_pool(
        self, pool: str, *, path: Path | None, data_dir: Path | None, strict: bool, skipped: list[str]
    ) -> list[Sample]:
        """Read every subtask (or, with ``path``, one file named after its subtask)."""
        source = self.pools[pool]
        folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
        prompts_dir = folder / "bbh" / "cot-prompts" if folder else None
        if prompts_dir is None or not prompts_dir.is_dir():
            where = (
                prompts_dir
                or "bbh/cot-prompts (no data folder: LAI_DATA_DIR unset, ../shared/data absent)"
            )
            raise DataError(
                f"BBH chain-of-thought prompts not found: {where}",
                hint="copy cot-prompts/<subtask>.txt of suzgunmirac/BIG-Bench-Hard there",
            )
        if path is not None:
            # A single file: its rows name their subtask, else the file name does.
            rows, _ = load_pool_rows(self.name, pool, source, path=path)
            stem = Path(path).name.removesuffix(".jsonl").removesuffix(".sample")
            by_subtask = {s: [r for r in rows if r.get("subtask", stem) == s] for s in SUBTASKS}
            unknown = {str(r.get("subtask", stem)) for r in rows} - set(SUBTASKS)
            if unknown:
                raise DataError(
                    f"{path}: unknown BBH subtask {sorted(unknown)[0]!r}",
                    hint="name the file <subtask>.jsonl",
                )
        else:
            by_subtask = {
                s: load_pool_rows(
                    self.name, f"{pool}/{s}", source_for(s, source), data_dir=data_dir
                )[0]
                for s in SUBTASKS
            }
        samples: list[Sample] = []
        for subtask, rows in by_subtask.items():
            if rows:
                self._cot_prompts[subtask] = read_cot_prompt(prompts_dir / f"{subtask}.txt")
            samples += self.read_rows(
                [{**row, "subtask": subtask} for row in rows], pool, f"{self.name}/{subtask}",
                strict=strict, skipped=skipped,
            )  # fmt: skip
        return samples

    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        subtask = str(row["subtask"])
        return Sample(
            id=f"{self.name}/{subtask}/{index}",
            task=self.name,
            question=str(row["input"]),
            reference=str(row["target"]).strip(),
            # The prompt text is one shared string per subtask, so this costs no memory.
            meta={"subtask": subtask, "cot_prompt": self._cot_prompts[subtask]},
        )

    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        self.check_protocol(protocol)
        cot_prompt = sample.meta["cot_prompt"]
        if protocol == "lm-eval":
            return lm_eval_prompt(cot_prompt, sample.question)
        return [{"role": "user", "content": f"{cot_prompt}\n\nQ: {sample.question}\n{COT_CUE}"}]

    def generation(self, protocol: str = "paper") -> GenerationSpec:
        if protocol == "lm-eval":
            return GenerationSpec(stop=LM_EVAL_STOP, max_new_tokens=LM_EVAL_MAX_TOKENS)
        # The exemplars' reasoning runs to several hundred tokens (dyck, word sorting), so
        # the usual 256-token budget would cut answers off; stop if it starts a new "Q:".
        return GenerationSpec(stop=("\n\nQ:",), max_new_tokens=LM_EVAL_MAX_TOKENS)

    def group(self, sample: Sample) -> str | None:
        return str(sample.meta["subtask"])

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        if protocol == "lm-eval":
            extracted = lm_eval_filter(LM_EVAL_ANSWER, response, 0)
            if extracted == "[invalid]":
                return Score(
                    False, None, "no 'the answer is' phrase found (lm-eval get-answer filter)"
                )
            correct = extracted == sample.reference
        else:
            found = extract_answer(response, sample.reference)
            if found is None:
                return Score(False, None, "no 'So the answer is' phrase found")
            extracted = found
            subtask = str(sample.meta.get("subtask", ""))
            correct = _canonical(extracted, subtask) == _canonical(sample.reference, subtask)
        if correct:
            return Score(True, extracted, f"answered {extracted!r}, matches")
        return Score(False, extracted, f"answered {extracted!r}, expected {sample.reference!r}")
