"""MBPP and HumanEval: write a Python function, scored pass@1 by running its tests.

Both benchmarks come in the HumanEval format here (``prompt`` = imports + signature +
docstring, ``test`` defining ``check(candidate)``, ``entry_point``): the LLMs-as-Instructors
authors rewrote MBPP that way, and that is what ``../shared/data/mbpp`` holds. Model-written
code only ever runs through :mod:`lai.sandbox`, a whole batch at once in parallel.

Protocols:
- ``paper``: a zero-shot chat prompt (our words) asking for the whole function in a
  ```python block. The first fenced block that defines the entry point is run (else a bare
  response that defines it), after the prompt's header (imports, helper functions) when the
  code lacks it, then the tests and ``check(entry_point)``.
- ``lm-eval``: lm-evaluation-harness 0.4.13's ``humaneval``: the row's prompt as a raw
  completion prompt, ``until`` = "\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint",
  ``max_gen_toks`` = 1024, program = prompt + completion + "\\n" + test + "\\ncheck(entry)".
  MBPP rows in HumanEval format get the same protocol. lm-eval's own ``mbpp`` task expects
  the original MBPP fields (``text``, ``code``, ``test_list``, as on the hub); such rows are
  supported too, with its exact 3-shot "[BEGIN] ... [DONE]" prompt, ``until`` = "[DONE]",
  256 new tokens (its default: mbpp.yaml sets none) and program = completion + "\\n" + the
  three asserts. Only the sandbox's timeout (10 s) differs from lm-eval's code_eval (3 s).

``Sample.reference`` holds the test code: the LE strategy shows the reference to the
instructor, and for code the tests are what "the right answer" means (the entry point is in
``meta``). Instructor-written samples are {question, solution, tests}; tests are asserts or a
``check(candidate)`` function, run later by the verification stage, not here.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from lai import sandbox
from lai.data import PoolSource
from lai.errors import DataError
from lai.records import GeneratedSample, Sample, Score
from lai.targets.prompting import cut_at_stop
from lai.tasks.base import GenerationSpec, Prompt, SampleRejected, Task

# lm-eval humaneval.yaml generation_kwargs (until, max_gen_toks).
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
HUMANEVAL_MAX_TOKENS = 1024
# lm-eval mbpp.yaml: until ["[DONE]"], no max_gen_toks, so lm_eval.defaults.DEFAULT_MAX_GEN_TOKS.
MBPP_STOP = ("[DONE]",)
MBPP_MAX_TOKENS = 256
MBPP_TEXT = (  # mbpp.yaml doc_to_text
    "You are an expert Python programmer, and here is your task: {text} "
    "Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
)

PROMPT = (
    "Complete the Python function below so that it does what its docstring says. Reply with "
    "the whole function (signature and body, plus any imports or helper functions it needs) "
    "in a single ```python code block.\n\n```python\n{question}\n```"
)
PROMPT_TEXT = (  # rows in the original MBPP format: a task in words and its tests
    "Write a Python function for the task below. Reply with the whole function (plus any "
    "imports it needs) in a single ```python code block.\n\n{question}"
)

# A fenced block; the last one may be cut off by the token limit, so "or the end" closes it.
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:import |from |def |async def |class |@)", re.MULTILINE)
_DEF_NAME = re.compile(r"^(?:async[ \t]+)?def[ \t]+(\w+)[ \t]*\(", re.MULTILINE)


def defines(code: str, name: str) -> re.Match[str] | None:
    """The top-level ``def name(`` in ``code``, if any."""
    return re.search(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.MULTILINE)


def extract_code(response: str, entry_point: str) -> tuple[str | None, str]:
    """(code, "") from a chat response, or (None, why not)."""
    blocks = _FENCE.findall(response)
    for block in blocks:
        if defines(block, entry_point):
            return block, ""
    if blocks:
        return None, f"no code block defines {entry_point}"
    if defines(response, entry_point):  # bare code; drop any prose before it
        start = _CODE_START.search(response)
        return response[start.start() if start else 0 :], ""
    if not response.strip():
        return None, "empty response"
    return None, f"no code block defines {entry_point} (the response has no ```python block)"


def with_header(code: str, prompt: str, entry_point: str) -> str:
    """Put the prompt's header (imports, helpers before the entry point) above ``code``.

    Models often repeat only the signature and drop ``from typing import List``. The header
    is left out when the code already has all of its lines; a repeated import is harmless,
    and a helper the code redefines is overridden, as the code comes after it.
    """
    match = defines(prompt, entry_point)
    header = prompt[: match.start()] if match else ""
    try:
        ast.parse(header)
    except SyntaxError:
        # An instructor-written question may open with prose ("Write a function that...");
        # only its import lines are code.
        header = "".join(f"{line}\n" for line in header.splitlines() if re.match(r"(from|import)\s", line))
    lines = set(code.splitlines())
    if all(line in lines for line in header.splitlines() if line.strip()):
        return code
    # `from __future__` must stay first in the file.
    future = [line for line in code.splitlines() if line.startswith("from __future__")]
    rest = "\n".join(line for line in code.splitlines() if not line.startswith("from __future__"))
    return "".join(f"{line}\n" for line in future) + header + rest


def build_program(solution: str, test: str, entry_point: str) -> str:
    """Solution + tests: ``check(entry_point)`` when the tests define ``check``, else asserts."""
    if re.search(r"^def check[ \t]*\(", test, re.MULTILINE):
        return sandbox.check_program(solution, test, entry_point)
    return f"{solution}\n\n{test}\n"


def entry_point_from_tests(tests: list[str], code: str) -> str:
    """The function an original-format MBPP row tests: the first call defined by its code
    (when given), else the first non-builtin call in its first assert."""
    calls = re.findall(r"(?<![\w.])([A-Za-z_]\w*)\s*\(", tests[0] if tests else "")
    defined = set(_DEF_NAME.findall(code))
    for name in calls:
        if name in defined or (not defined and not hasattr(builtins, name)):
            return name
    return calls[0] if calls else ""


def explain(result: sandbox.ExecutionResult) -> str:
    """The sandbox's reason, plus the failing assert: a bare "AssertionError" from
    ``assert candidate(2) == 2`` does not tell the instructor which case failed."""
    if result.status != "failed" or "AssertionError" not in result.reason:
        return result.reason
    frames = re.findall(r'^  File "[^"]*main\.py", line \d+.*\n {4}(.+)$', result.stderr, re.M)
    if not frames or not frames[-1].lstrip().startswith("assert"):
        return result.reason
    return f"{result.reason} (at: {frames[-1].strip()[:200]})"


@cache
def mbpp_fewshot() -> str:
    """lm-eval mbpp's 3-shot prefix: each shot is doc_to_text + code + "\\n[DONE]" (target
    delimiter ""), followed by the fewshot delimiter "\\n\\n"."""
    text = resources.files("lai.tasks").joinpath("fewshot/code_mbpp_lm_eval.jsonl")
    shots = [json.loads(line) for line in text.read_text(encoding="utf-8").splitlines() if line]
    return "".join(
        MBPP_TEXT.format(text=s["text"], tests="\n".join(s["test_list"][:3]))
        + s["code"]
        + "\n[DONE]\n\n"
        for s in shots
    )


class CodeTask(Task):
    """The logic both benchmarks share; subclasses only name their pools."""

    # Not re-solved: a generated sample's reference solution runs against its own tests.
    instructor_templates: ClassVar[dict[str, str]] = {"le": "le_code", "lec": "lec_code", "random": "random_code"}
    sample_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "question": {"type": "string", "description": "signature + docstring of a new task"},
            "solution": {"type": "string", "description": "the complete correct function"},
            "tests": {"type": "string", "description": "assert statements that call it"},
        },
        "required": ["question", "solution", "tests"],
    }

    def __init__(self, *, timeout_s: float = 10.0, workers: int | None = None) -> None:
        self.timeout_s = timeout_s  # per program, in the sandbox
        self.workers = workers  # parallel programs; None: one per CPU
        self._formats: set[str] = set()  # row formats loaded so far ("humaneval", "mbpp")

    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        key = row.get("task_id", index)
        if "prompt" in row and "test" in row and "entry_point" in row:
            self._formats.add("humaneval")
            meta = {"format": "humaneval", "test": row["test"], "entry_point": row["entry_point"]}
            if row.get("canonical_solution"):
                meta["canonical_solution"] = row["canonical_solution"]
            question, reference = str(row["prompt"]), str(row["test"])
        elif "text" in row and "test_list" in row:
            self._formats.add("mbpp")
            tests = "\n".join(row["test_list"])
            setup = str(row.get("test_setup_code") or "")
            meta = {
                "format": "mbpp", "text": row["text"], "test_list": list(row["test_list"]),
                "test": f"{setup}\n{tests}" if setup else tests,
                "entry_point": entry_point_from_tests(row["test_list"], str(row.get("code", ""))),
            }  # fmt: skip
            if row.get("code"):
                meta["canonical_solution"] = row["code"]
            question = f"{row['text']}\nYour function must pass these tests:\n{tests}"
            reference = meta["test"]
        else:
            raise DataError(
                f"{self.name}/{pool} row {index} has neither prompt/test/entry_point "
                "nor text/test_list",
                hint="use HumanEval-style rows or the original MBPP fields",
            )
        return Sample(f"{self.name}/{pool}/{key}", self.name, question, reference, meta)

    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        self.check_protocol(protocol)
        original = sample.meta.get("format") == "mbpp"
        if protocol == "lm-eval":
            if original:
                tests = "\n".join(sample.meta["test_list"][:3])
                return mbpp_fewshot() + MBPP_TEXT.format(text=sample.meta["text"], tests=tests)
            return sample.question
        template = PROMPT_TEXT if original else PROMPT
        return [{"role": "user", "content": template.format(question=sample.question.strip())}]

    def generation(self, protocol: str = "paper") -> GenerationSpec:
        if protocol != "lm-eval":
            return GenerationSpec()
        # The spec is per task, the stop strings per row format: follow the rows loaded. With
        # both formats loaded, "\ndef" would cut original-format code, so only "[DONE]" stops
        # generation and score() cuts each completion at its own format's stop strings.
        if self._formats == {"mbpp"}:
            return GenerationSpec(MBPP_STOP, MBPP_MAX_TOKENS)
        if "mbpp" in self._formats:
            return GenerationSpec(MBPP_STOP, HUMANEVAL_MAX_TOKENS)
        return GenerationSpec(HUMANEVAL_STOP, HUMANEVAL_MAX_TOKENS)

    def program(self, sample: Sample, response: str, protocol: str = "paper") -> tuple[str, str]:
        """(code that was extracted, program to run); the program is "" with the reason
        in place of the code when nothing runnable was found."""
        meta, entry = sample.meta, sample.meta.get("entry_point", "")
        if protocol == "lm-eval":
            if meta.get("format") == "mbpp":  # code_eval: candidate + "\n" + the 3 asserts
                code = cut_at_stop(response, MBPP_STOP)
                return code, code + "\n" + "\n".join(meta["test_list"][:3])
            code = sample.question + cut_at_stop(response, HUMANEVAL_STOP)
            return code, f"{code}\n{meta['test']}\ncheck({entry})"
        code, why = extract_code(response, entry)
        if code is None:
            return why, ""
        return code, build_program(with_header(code, sample.question, entry), meta["test"], entry)

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        return self.score_many([sample], [response], protocol)[0]

    def score_many(
        self, samples: list[Sample], responses: list[str], protocol: str = "paper"
    ) -> list[Score]:
        """Run every runnable program of the batch in parallel in the sandbox."""
        self.check_protocol(protocol)
        built = [self.program(s, r, protocol) for s, r in zip(samples, responses, strict=True)]
        runnable = [program for _, program in built if program]
        results = iter(sandbox.run_many(runnable, workers=self.workers, timeout_s=self.timeout_s))
        scores = []
        for code, program in built:
            if not program:
                scores.append(Score(False, None, code))
                continue
            result = next(results)
            scores.append(Score(result.passed, code, explain(result)))
        return scores

    # ---- the instructor side ---------------------------------------------------------

    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        question = str(item.get("question") or "").strip()
        solution = str(item.get("solution") or "").strip()
        tests = item.get("tests") or item.get("answer") or ""
        tests = "\n".join(map(str, tests)) if isinstance(tests, list) else str(tests).strip()
        if not question:
            raise SampleRejected("missing question")
        names = _DEF_NAME.findall(question)
        if not names:
            raise SampleRejected("question has no function signature")
        try:
            tree = ast.parse(solution)
        except SyntaxError as error:
            raise SampleRejected(
                f"solution does not parse ({error.msg}, line {error.lineno})"
            ) from None
        defined = {
            n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if not defined:
            raise SampleRejected("solution defines no function")
        if names[-1] not in defined:
            raise SampleRejected(f"solution does not define {names[-1]}, the question's function")
        try:
            test_tree = ast.parse(tests)
        except SyntaxError as error:
            raise SampleRejected(f"tests do not parse ({error.msg}, line {error.lineno})") from None
        if not any(isinstance(node, ast.Assert) for node in ast.walk(test_tree)):
            raise SampleRejected("tests contain no assert")
        return question, solution, tests

    def training_target(self, solution: str, answer: str) -> str:
        # Exactly what the paper-protocol scorer extracts: one ```python block.
        return f"```python\n{solution.strip()}\n```"

    def reference_sample(self, sample: Sample) -> tuple[str, str, str] | None:
        canonical = str(sample.meta.get("canonical_solution") or "")
        if not canonical:
            return None
        # HumanEval-style rows keep only the body after the prompt; the paper protocol
        # teaches whole functions, so the prompt goes in front.
        solution = canonical if sample.meta.get("format") == "mbpp" else sample.question + canonical
        return sample.question, solution, str(sample.meta.get("test", sample.reference))

    def runnable_sample(self, sample: GeneratedSample) -> tuple[Sample, str] | None:
        return self.generated_sample(sample.question, sample.answer, sample.id), self.training_target(sample.solution, sample.answer)

    def generated_sample(self, question: str, tests: str, sample_id: str = "generated") -> Sample:
        """A scoreable sample for an instructor-written task, for running its tests."""
        names = _DEF_NAME.findall(question)
        meta = {"format": "humaneval", "test": tests, "entry_point": names[-1] if names else ""}
        return Sample(sample_id, self.name, question, tests, meta)


#: Both row formats (HumanEval-style and original MBPP): what each field must hold.
ROW_TYPES: dict[str, tuple[type, ...]] = {
    "task_id": (str, int), "prompt": (str,), "test": (str,), "entry_point": (str,), "canonical_solution": (str,),
    "text": (str,), "code": (str,), "test_list": (list,), "test_setup_code": (str,),
}


class MBPP(CodeTask):
    """MBPP (Austin et al., 2021) as rewritten HumanEval-style by the paper's authors.

    The hub fallback is the original google-research-datasets/mbpp ("full"), whose rows
    (text, code, test_list) are other rows than the paper's set (374 train / 500 test vs
    462 / its own test); they load in the original format, which is lm-eval's ``mbpp``.
    """

    name = "mbpp"
    pools: ClassVar[dict[str, PoolSource]] = {
        "train": PoolSource(
            ("mbpp/train.jsonl",), ("task_id",), ("google-research-datasets/mbpp", "full", "train"), ROW_TYPES
        ),
        "test": PoolSource(
            ("mbpp/test.jsonl", "mbpp/test_sample.jsonl"),
            ("task_id",),
            ("google-research-datasets/mbpp", "full", "test"),
            ROW_TYPES,
        ),
    }


class HumanEval(CodeTask):
    """HumanEval (Chen et al., 2021): 164 hand-written functions; a test pool only."""

    name = "humaneval"
    pools: ClassVar[dict[str, PoolSource]] = {
        "test": PoolSource(
            ("humaneval/test.jsonl", "humaneval/test_sample.jsonl"),
            ("task_id", "prompt", "test", "entry_point"),
            ("openai/openai_humaneval", None, "test"),
            ROW_TYPES,
        ),
    }
