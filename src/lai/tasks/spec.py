"""A task file: the pydantic model of its YAML, read with one-line errors naming the line.

The keys follow lm-evaluation-harness's task YAML where it has one (``task``,
``dataset_path``, ``dataset_name``, ``dataset_kwargs.data_files``, ``training_split`` /
``validation_split`` / ``test_split``, ``doc_to_text`` / ``doc_to_target`` /
``doc_to_choice`` as Jinja templates, ``target_delimiter``, ``generation_kwargs.until``,
``filter_list``, ``metric_list``, ``output_type``); what lm-eval has no word for (the
chat prompt, the data folder, the instructor side) lives under ``lai:``. The format is
documented, with examples, in docs/task_files.md.

Templates are compiled when the file is read (a syntax error is named there) and run in
Jinja's immutable sandbox with ``StrictUndefined``: a field a row does not have is an
error naming the field, never an empty string.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.sandbox
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from lai.errors import ConfigError, DataError, read_text, too_big
from lai.tasks.gsm8k import normalize_number
from lai.tasks.metrics import (
    FILTER_OPTIONS,
    METRICS,
    Filter,
    Metric,
    TookTooLong,
    compile_patterns,
    time_limit,
)

TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,79}")
PROTOCOL_NAMES = ("paper", "lm-eval")
STRATEGY_KINDS = ("le", "lec", "random")

#: lm-eval keys lai does not read: named in the error, so nobody thinks they took effect.
UNSUPPORTED = {
    "process_docs": "lai reads rows as they are; reshape them in the templates",
    "process_results": "choose a metric from metric_list instead",
    "num_fewshot": "lai task files are zero-shot",
    "fewshot_config": "lai task files are zero-shot",
    "fewshot_split": "lai task files are zero-shot",
    "doc_to_decontamination_query": "lai decontaminates on the question text",
    "should_decontaminate": "lai decontaminates on the question text",
    "repeats": "lai scores one response per item",
}


def _regex_replace(value: str, pattern: str, replacement: str = "") -> str:
    return re.sub(pattern, replacement, str(value))


MAX_PRODUCT = 1_000_000  # the longest text or list a template's `*` may make


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, with ``*`` and ``**`` bounded: ``'a' * 10**10`` would otherwise
    take the machine's memory (the sandbox bounds only ``range``)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 1000:
                raise jinja2.sandbox.SecurityError(f"exponent {right} is too large for a template")
            return left**right
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int) and len(sequence) * count > MAX_PRODUCT:
                raise jinja2.sandbox.SecurityError(f"a template may not make a sequence of more than {MAX_PRODUCT} items")
        return left * right


def environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["number"] = lambda value: normalize_number(str(value)) or ""
    env.filters["regex_replace"] = _regex_replace
    env.tests["search"] = lambda value, pattern: re.search(pattern, str(value)) is not None
    return env


ENV = environment()


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilterStep(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    function: str

    @model_validator(mode="after")
    def _known(self) -> FilterStep:
        if self.function not in FILTER_OPTIONS:
            raise ValueError(f"unknown filter function {self.function!r}; choose one of {sorted(FILTER_OPTIONS)}")
        extra = set(self.model_extra or {}) - FILTER_OPTIONS[self.function]
        if extra:
            raise ValueError(f"filter {self.function!r} takes no option {sorted(extra)[0]!r}")
        if self.function == "regex":
            if "regex_pattern" not in (self.model_extra or {}):
                raise ValueError("a regex filter needs regex_pattern")
            try:
                compile_patterns(self.model_extra["regex_pattern"])  # type: ignore[index]
            except re.error as error:
                raise ValueError(f"regex_pattern does not compile: {error}") from None
            select = (self.model_extra or {}).get("group_select", 0)
            if isinstance(select, bool) or not isinstance(select, int):
                raise ValueError("group_select must be a whole number (0 the first match, -1 the last)")
            if not isinstance((self.model_extra or {}).get("fallback", ""), str):
                raise ValueError("fallback must be text (default '[invalid]')")
        return self

    def build(self) -> Filter:
        options = dict(self.model_extra or {})
        if self.function == "regex":
            options["_compiled"] = compile_patterns(options["regex_pattern"])
        return Filter(self.function, options)


class FilterPipeline(Part):
    name: str = "default"
    filter: list[FilterStep] = Field(min_length=1)


class MetricEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    metric: str

    @model_validator(mode="after")
    def _known(self) -> MetricEntry:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {METRICS.names()}")
        try:
            self.build()
        except re.error as error:
            raise ValueError(f"a regex of metric {self.metric!r} does not compile: {error}") from None
        return self

    def build(self) -> Metric:
        return METRICS.get(self.metric)(**dict(self.model_extra or {}))


class GenerationKwargs(Part):
    until: list[str] | str = Field(default_factory=list)
    max_gen_toks: int | None = Field(None, ge=1)
    do_sample: bool = False  # lai decodes greedily; accepted so lm-eval files read
    temperature: float | None = None

    @field_validator("until")
    @classmethod
    def _not_empty(cls, value: list[str] | str) -> list[str] | str:
        if "" in ([value] if isinstance(value, str) else value):
            raise ValueError("a stop string must not be empty (every text holds the empty string)")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.until,) if isinstance(self.until, str) else tuple(self.until)


class PromptSpec(Part):
    template: str = "{{ question }}"
    chat: bool = True  # a user message (the target's chat template applies) or a plain string


class Rule(Part):
    """A format rule on a generated sample: ``check`` is a Jinja expression over its fields."""

    check: str
    reason: str


class InstructorSpec(Part):
    description: str = Field("", description="what the task is, in a sentence, for the instructor")
    sample_schema: dict[str, Any] | None = None
    question: str = "{{ question }}"
    solution: str = "{{ solution | default('') }}"
    answer: str = "{{ answer }}"
    training_target: str = "{{ solution }}\nThe answer is {{ answer }}."
    example: dict[str, Any] | None = None
    rules: list[Rule] = Field(default_factory=list)
    resolve: bool = False
    resolve_template: str | None = None
    resolve_schema: dict[str, Any] | None = None
    templates: dict[Literal["le", "lec", "random"], str] = Field(default_factory=dict)


class LaiSection(Part):
    prompt: dict[Literal["paper", "lm-eval"], PromptSpec] = Field(default_factory=dict)
    id_field: str | None = None
    data_folder: dict[str, list[str]] = Field(default_factory=dict)
    required_fields: list[str] = Field(default_factory=list)
    require: list[Rule] = Field(default_factory=list)
    reference_solution: str | None = None
    instructor: InstructorSpec | None = None


class TaskSpec(Part):
    task: str
    output_type: Literal["generate_until", "multiple_choice"] = "generate_until"
    dataset_path: str | None = None
    dataset_name: str | None = None
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    training_split: str | None = None
    validation_split: str | None = None
    test_split: str | None = None
    doc_to_text: str
    doc_to_target: str | StrictInt  # not a bool: `true` is no option index
    doc_to_choice: str | list[str] | None = None
    target_delimiter: str = " "
    generation_kwargs: GenerationKwargs = Field(default_factory=GenerationKwargs)
    filter_list: list[FilterPipeline] = Field(default_factory=list)
    metric_list: list[MetricEntry] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tag: str | list[str] | None = None
    lai: LaiSection = Field(default_factory=LaiSection)

    @field_validator("task")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TASK_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a task name (a letter, then letters, digits, '_', '.', '-')")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if not self.splits():
            raise ValueError("[test_split] name at least one split (training_split, validation_split, test_split)")
        if self.output_type == "multiple_choice" and self.doc_to_choice is None:
            raise ValueError("[doc_to_choice] a multiple_choice task needs doc_to_choice")
        files = self.dataset_kwargs.get("data_files")
        if files is not None and not (
            isinstance(files, dict)
            and all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(f, str) for f in v)) for v in files.values())
        ):
            raise ValueError("[dataset_kwargs.data_files] give a mapping of split -> file (or list of files)")
        local_only = self.dataset_path in (None, "json", "csv", "parquet")
        for split in self.splits():
            if local_only and split not in (files or {}) and split not in self.lai.data_folder:
                raise ValueError(f"[dataset_kwargs.data_files] split {split!r} has no data file (and no hub dataset_path)")
        return self

    def splits(self) -> list[str]:
        return list(dict.fromkeys(s for s in (self.training_split, self.validation_split, self.test_split) if s))


# ---- reading a file -------------------------------------------------------------------------


def key_lines(node: yaml.Node, path: tuple[Any, ...] = (), seen: set[int] | None = None) -> dict[tuple[Any, ...], int]:
    """Every key path of a composed YAML document -> its 1-based line. A node reached again
    through an alias (``*name``) is not walked again: nested aliases would otherwise make
    the walk exponential (a "billion laughs" file)."""
    seen = set() if seen is None else seen
    lines: dict[tuple[Any, ...], int] = {path: node.start_mark.line + 1}
    if id(node) in seen:
        return lines
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            if child in lines:  # a key given twice: "last wins" would hide the first silently
                raise ValueError(f"{key.start_mark.line + 1}: key {key.value!r} appears twice (first on line {lines[child]}); keep one")
            lines.update(key_lines(value, child, seen))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(key_lines(item, (*path, index), seen))
    return lines


class Where:
    """Names a place in a task file: ``file:line: key``."""

    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines

    def __call__(self, *key: Any) -> str:
        for end in range(len(key), -1, -1):
            if key[:end] in self.lines:
                line = self.lines[key[:end]]
                break
        else:
            line = 1
        dotted = ".".join(str(k) for k in key)
        return f"{self.path}:{line}: {dotted}" if dotted else f"{self.path}:{line}"


def read_spec(path: Path) -> tuple[TaskSpec, Where]:
    """Read and check a task file; every problem is a ConfigError of one line."""
    path = Path(path)
    if path.is_dir() or not path.is_file():
        raise ConfigError(f"task file not found: {path}", hint="give the path of a task .yaml file")
    text = read_text(path, "task file")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    except (ValueError, RecursionError) as error:
        raise ConfigError(f"{path} holds a value lai cannot read: {too_big(error)}") from None
    if not isinstance(raw, dict) or node is None:
        raise ConfigError(f"{path} must hold a mapping of task settings (task:, doc_to_text:, ...)")
    try:
        where = Where(path, key_lines(node))
    except ValueError as error:
        raise ConfigError(f"{path}:{error}") from None
    if (bad := _surrogate_at(raw)) is not None:
        raise ConfigError(f"{where(*bad)}: holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is not text")
    for key, why in UNSUPPORTED.items():
        if key in raw:
            raise ConfigError(f"{where(key)}: not supported in lai task files ({why})")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as error:
        problem = error.errors()[0]
        loc = tuple(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if named := re.match(r"\[([\w.]+)\] (.*)", message):
            loc, message = (*loc, *named[1].split(".")), named[2]
        loc = tuple(part for part in loc if not (isinstance(part, str) and part in ("str", "list[str]", "int", "literal['paper','lm-eval']")))
        if problem["type"] == "extra_forbidden":
            message = "unknown key (see docs/task_files.md for the keys a task file takes)"
        elif problem["type"] == "missing":
            message = "missing (every task file needs task, doc_to_text, doc_to_target and a split)"
        raise ConfigError(f"{where(*loc)}: {message}") from None
    check_templates(spec, where)
    return spec, where


def _surrogate_at(value: Any, path: tuple[Any, ...] = (), seen: set[int] | None = None) -> tuple[Any, ...] | None:
    """The key path of the first string with a lone surrogate (YAML's "\\ud800" makes one;
    it cannot be written as UTF-8, so a run would fail on it halfway), else None.

    Each list or mapping is walked once: YAML aliases share one object, and a file of
    nested aliases (a "billion laughs") would otherwise be walked billions of times."""
    seen = set() if seen is None else seen
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict | list):
        if id(value) in seen:
            return None
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and (found := _surrogate_at(key, path, seen)) is not None:
                return found
            if (found := _surrogate_at(item, (*path, key), seen)) is not None:
                return found
    return None


def templates_of(spec: TaskSpec) -> list[tuple[tuple[Any, ...], str]]:
    """Every Jinja template in the file, with its key path."""
    found: list[tuple[tuple[Any, ...], str]] = [(("doc_to_text",), spec.doc_to_text)]
    if isinstance(spec.doc_to_target, str):
        found.append((("doc_to_target",), spec.doc_to_target))
    if isinstance(spec.doc_to_choice, str):
        found.append((("doc_to_choice",), spec.doc_to_choice))
    elif spec.doc_to_choice:
        found += [(("doc_to_choice", i), t) for i, t in enumerate(spec.doc_to_choice)]
    for protocol, prompt in spec.lai.prompt.items():
        found.append((("lai", "prompt", protocol, "template"), prompt.template))
    if spec.lai.reference_solution:
        found.append((("lai", "reference_solution"), spec.lai.reference_solution))
    if spec.lai.instructor:
        for key in ("question", "solution", "answer", "training_target"):
            found.append((("lai", "instructor", key), getattr(spec.lai.instructor, key)))
    return found


def expressions_of(spec: TaskSpec) -> list[tuple[tuple[Any, ...], str]]:
    found = [(("lai", "require", i, "check"), rule.check) for i, rule in enumerate(spec.lai.require)]
    if spec.lai.instructor:
        found += [(("lai", "instructor", "rules", i, "check"), r.check) for i, r in enumerate(spec.lai.instructor.rules)]
    return found


def check_templates(spec: TaskSpec, where: Where) -> None:
    for key, source in templates_of(spec):
        try:
            ENV.from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise ConfigError(f"{where(*key)}: template syntax error: {error.message} (template line {error.lineno})") from None
    for key, source in expressions_of(spec):
        try:
            ENV.compile_expression(source)
        except jinja2.TemplateSyntaxError as error:
            raise ConfigError(f"{where(*key)}: expression syntax error: {error.message}") from None


@functools.lru_cache(maxsize=1024)
def _template(source: str) -> jinja2.Template:
    return ENV.from_string(source)  # compiled once: a pool renders it for every row


@functools.lru_cache(maxsize=1024)
def _expression(source: str) -> Any:
    return ENV.compile_expression(source, undefined_to_none=False)


class TemplateFailed(DataError):
    """A template or expression failed on a row (a missing field, a failing method call)."""


#: The longest one template may take on one row (a loop over range(99999) in another).
TEMPLATE_LIMIT_S = 5.0


def _too_long(what: str) -> ConfigError:
    return ConfigError(
        f"{what}: took over {TEMPLATE_LIMIT_S:g} s on one row", hint="a loop or a regular expression in it runs too long; shorten it"
    )


def render(source: str, context: dict[str, Any], what: str) -> str:
    """A template rendered; a missing field or a failing expression is a DataError naming ``what``."""
    try:
        with time_limit(TEMPLATE_LIMIT_S):
            return _template(source).render(context)
    except TookTooLong:
        raise _too_long(what) from None
    except jinja2.UndefinedError as error:
        raise TemplateFailed(f"{what}: {error.message}") from None
    except jinja2.TemplateError as error:
        raise TemplateFailed(f"{what}: {error}") from None
    except Exception as error:  # noqa: BLE001 - a template's Python (.index of a missing item, ...)
        raise TemplateFailed(f"{what}: {type(error).__name__}: {error}") from None


def holds(source: str, context: dict[str, Any], what: str) -> bool:
    try:
        with time_limit(TEMPLATE_LIMIT_S):
            return bool(_expression(source)(context))
    except TookTooLong:
        raise _too_long(what) from None
    except jinja2.UndefinedError as error:
        raise TemplateFailed(f"{what}: {error.message}") from None
    except Exception as error:  # noqa: BLE001
        raise TemplateFailed(f"{what}: {type(error).__name__}: {error}") from None


def render_list(source: str | list[str], context: dict[str, Any], what: str) -> list[str]:
    """doc_to_choice: a template that renders to a list literal (lm-eval's way), or a list
    of templates, one per option (options that render empty are left out)."""
    if isinstance(source, list):
        return [text for item in source if (text := render(item, context, what).strip())]
    rendered = render(source, context, what)
    try:
        value = ast.literal_eval(rendered)
    except (ValueError, SyntaxError):
        raise TemplateFailed(f"{what}: renders to {rendered[:60]!r}, not a list of options") from None
    if not isinstance(value, list | tuple):
        raise TemplateFailed(f"{what}: renders to {rendered[:60]!r}, not a list of options")
    return [str(v) for v in value]
