"""A Task built from a task file (lai.tasks.spec), and how task files are found.

A task file becomes a :class:`FileTask` subclass (``task_class``) whose class attributes
are what the registry and the config check read (``name``, ``pools``), so a file task is
used exactly like a built-in one: ``lai run``, ``lai eval``, the strategies and verify see
no difference. Where they come from:

- shipped with lai: ``src/lai/tasks/files/*.yaml``, registered by name in lai.tasks
  (resolved here, lazily, through :func:`__getattr__`);
- the user's: ``--include-path DIR`` (or a file) on ``lai run / validate / eval / tasks``
  and ``include_path: [DIR, ...]`` at the top of a run config; every ``*.yaml`` / ``*.yml``
  under a folder whose top level has a ``task:`` key is one task (other YAML files, such
  as a run config beside it, are left alone). A name already taken by another task is an
  error naming both.

Not yet: Ray workers (``cluster.backend: ray``) resolve tasks by name in their own
processes, where user task files are not registered.
"""

from __future__ import annotations

import contextlib
import csv
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import yaml

from lai.data import PoolSource, load_pool_rows, read_jsonl_rows
from lai.errors import ConfigError, DataError
from lai.records import GeneratedSample, Sample, Score
from lai.tasks import TASKS
from lai.tasks.base import Choices, GenerationSpec, Prompt, SampleRejected, Task
from lai.tasks.choice import LETTERS, MultipleChoiceTask, parse_question, render_question
from lai.tasks.file_instructor import instructor_side
from lai.tasks.metrics import Choice, ExactMatch, Filter, Metric, run_filters
from lai.tasks.spec import (
    PromptSpec,
    TaskSpec,
    TemplateFailed,
    Where,
    holds,
    read_spec,
    render,
    render_list,
)

FILES = Path(__file__).resolve().parent / "files"
#: Task files shipped with lai: registry name -> file in FILES.
SHIPPED = {"gsm8k_yaml": "gsm8k.yaml", "arc_challenge_yaml": "arc_challenge.yaml"}
LOCAL_FORMATS = (None, "json", "csv", "parquet")

class FileTask(Task):
    """A task defined by a task file; subclasses are made by :func:`task_class`."""

    spec: ClassVar[TaskSpec]
    where: ClassVar[Where]
    origin: ClassVar[str]  # where it came from, for `lai tasks`
    local_files: ClassVar[dict[str, list[Path]]]  # split -> data files (dataset_kwargs.data_files)

    def __init__(self) -> None:
        spec = self.spec
        self.multiple_choice = spec.output_type == "multiple_choice"
        default = Filter("choice_letter" if self.multiple_choice else "strip", {})
        self.filters: list[tuple[str, list[Filter]]] = [
            (p.name, [step.build() for step in p.filter]) for p in spec.filter_list
        ] or [("default", [default])]
        self.metrics: list[tuple[str, Metric]] = [(m.metric, m.build()) for m in spec.metric_list] or [
            ("choice", Choice()) if self.multiple_choice else ("exact_match", ExactMatch())
        ]

    def asks_default_judge(self) -> bool:
        return any(name == "llm_judge" and not metric.options.get("base_url") for name, metric in self.metrics)

    # ---- data -------------------------------------------------------------------------

    def read_pool(
        self, pool: str, *, path: Path | None, data_dir: Path | None, strict: bool, skipped: list[str]
    ) -> list[Sample]:
        if pool not in self.pools:
            raise ConfigError(f"task {self.name} has no pool {pool!r}; it has {list(self.pools)}")
        if path is not None:
            rows, origin = read_table(Path(path).expanduser(), self.name, pool), str(path)
        elif pool in self.local_files:
            rows = [row for file in self.local_files[pool] for row in read_table(file, self.name, pool, self.where("dataset_kwargs", "data_files", pool))]
            origin = ", ".join(map(str, self.local_files[pool]))
        else:
            rows, origin = load_pool_rows(self.name, pool, self.pools[pool], data_dir=data_dir)
        missing = [f for f in self.spec.lai.required_fields if rows and f not in rows[0]]
        if missing:
            raise DataError(f"{origin}: rows have no field {missing[0]!r} (lai.required_fields of {self.where()})")
        samples = self.read_rows(rows, pool, origin, strict=strict, skipped=skipped)
        seen: set[str] = set()
        for sample in samples:  # records, resume and the paired test are keyed by id: two rows must not share one
            if sample.id in seen:
                raise DataError(
                    f"{origin}: two rows have the id {sample.id!r} (lai.id_field {self.spec.lai.id_field!r} of {self.where()})",
                    hint="give every row its own id, or drop lai.id_field to number the rows",
                )
            seen.add(sample.id)
        return samples

    def read_rows(
        self, rows: list[dict[str, Any]], pool: str, origin: str, *, strict: bool = False, skipped: list[str]
    ) -> list[Sample]:
        # A template that fails on the first row is the file's mistake, not the row's: say so
        # instead of skipping every row one by one.
        if rows:
            try:
                self.to_sample(rows[0], 0, pool)
            except TemplateFailed as error:
                raise DataError(f"{error.message} (first row of {origin})", hint="fix the template or the data") from None
        return super().read_rows(rows, pool, origin, strict=strict, skipped=skipped)

    def to_sample(self, row: dict[str, Any], index: int, pool: str) -> Sample:
        lai = self.spec.lai
        for number, rule in enumerate(lai.require):
            if not holds(rule.check, row, self.where("lai", "require", number, "check")):
                raise DataError(f"{self.name}/{pool} row {index}: {rule.reason}")
        text = render(self.spec.doc_to_text, row, self.where("doc_to_text")).strip()
        if not text:  # a question of nothing: the target would be scored on an empty prompt
            raise TemplateFailed(f"{self.where('doc_to_text')}: renders empty")
        if lai.id_field and row.get(lai.id_field) in (None, ""):
            # Numbering this row instead would mix two id schemes in one pool.
            raise DataError(f"{self.name}/{pool} row {index}: no {lai.id_field!r} (lai.id_field of {self.where()})")
        native = row[lai.id_field] if lai.id_field else index
        meta: dict[str, Any] = {}
        if lai.reference_solution:
            meta["solution"] = render(lai.reference_solution, row, self.where("lai", "reference_solution")).strip()
        if not self.multiple_choice:
            target = self.spec.doc_to_target
            reference = str(target) if isinstance(target, int) else render(target, row, self.where("doc_to_target")).strip()
            if not reference:  # no answer could ever match it
                raise TemplateFailed(f"{self.where('doc_to_target')}: renders empty")
            return Sample(id=f"{self.name}/{pool}/{native}", task=self.name, question=text, reference=reference, meta=meta)
        assert self.spec.doc_to_choice is not None
        texts = render_list(self.spec.doc_to_choice, row, self.where("doc_to_choice"))
        gold = self._gold(row, texts)
        if len(texts) < 2 or len(texts) > len(LETTERS) or gold is None:
            raise DataError(f"{self.name}/{pool} row {native}: cannot read its options and answer ({len(texts)} options)")
        options = dict(zip(LETTERS, texts, strict=False))
        meta.update(options=options, stem=text)
        return Sample(
            id=f"{self.name}/{pool}/{native}", task=self.name, question=render_question(text, options),
            reference=LETTERS[gold], meta=meta,
        )  # fmt: skip

    def _gold(self, row: dict[str, Any], texts: list[str]) -> int | None:
        """doc_to_target of a multiple-choice task: an index (lm-eval's way), an option's
        text, or an option letter."""
        target = self.spec.doc_to_target
        key = str(target) if isinstance(target, int) else render(target, row, self.where("doc_to_target")).strip()
        if key.lstrip("-").isdigit():
            index = int(key)
        elif key in texts:
            index = texts.index(key)
        elif len(key) == 1 and key.upper() in LETTERS:
            index = LETTERS.index(key.upper())
        else:
            return None
        return index if 0 <= index < len(texts) else None

    # ---- prompting and scoring ----------------------------------------------------------

    def _prompt_spec(self, protocol: str) -> PromptSpec:
        self.check_protocol(protocol)
        return self.spec.lai.prompt.get(protocol) or PromptSpec(chat=protocol == "paper")  # type: ignore[call-overload]

    def prompt(self, sample: Sample, protocol: str = "paper") -> Prompt:
        spec = self._prompt_spec(protocol)
        context = {"question": sample.question, "stem": sample.meta.get("stem", sample.question), "options": sample.meta.get("options", {})}
        text = render(spec.template, context, self.where("lai", "prompt", protocol, "template"))
        return [{"role": "user", "content": text}] if spec.chat else text

    def generation(self, protocol: str = "paper") -> GenerationSpec:
        kwargs = self.spec.generation_kwargs
        return GenerationSpec(stop=kwargs.stops(), max_new_tokens=kwargs.max_gen_toks)

    def scoring_mode(self, protocol: str = "paper") -> str:
        return "loglikelihood" if self.multiple_choice and protocol == "lm-eval" else "generate"

    def choices(self, sample: Sample, protocol: str = "paper") -> Choices | None:
        if not self.multiple_choice:
            return None
        letters = list(sample.meta["options"])
        gold = letters.index(sample.reference)
        if protocol == "lm-eval":
            delimiter = self.spec.target_delimiter
            return Choices(self.prompt(sample, protocol), [delimiter + t for t in sample.meta["options"].values()], gold)
        return Choices(self.prompt(sample, protocol), letters, gold)

    def score(self, sample: Sample, response: str, protocol: str = "paper") -> Score:
        return self.score_many([sample], [response], protocol)[0]

    def score_many(self, samples: list[Sample], responses: list[str], protocol: str = "paper") -> list[Score]:
        """Every filter pipeline, then every metric on its answers, a batch at a time (a
        metric that asks an endpoint, the LLM judge, sees the whole batch). The first
        pipeline and metric make the score; with more, each pair is in ``Score.metrics``."""
        self.check_protocol(protocol)
        table: list[list[Score]] = [[] for _ in samples]
        notes: list[list[str]] = [[] for _ in samples]  # a later metric's own words (a judge's reasoning)
        names: list[str] = []
        for filter_name, steps in self.filters:
            extracted = [run_filters(steps, r, s.meta.get("options", {})) for s, r in zip(samples, responses, strict=True)]
            for metric_name, metric in self.metrics:
                names.append(f"{metric_name},{filter_name}")
                verdicts = metric.verdict_many(extracted, samples, responses)
                for row, note, answer, verdict in zip(table, notes, extracted, verdicts, strict=True):
                    if answer is None or verdict is None:
                        row.append(Score(False, None, self._nothing_found(steps)))
                    else:
                        reason = verdict.reason or self._reason(metric, verdict.correct, verdict.shown, verdict.gold)
                        if verdict.reason and row:
                            note.append(f"{names[-1]}: {verdict.reason}")
                        row.append(Score(verdict.correct, verdict.shown, reason))
        if len(names) == 1:
            return [row[0] for row in table]
        return [
            Score(row[0].correct, row[0].extracted, "; ".join([row[0].reason, *note]), metrics={n: sc.correct for n, sc in zip(names, row, strict=True)})
            for row, note in zip(table, notes, strict=True)
        ]

    @staticmethod
    def _nothing_found(steps: list[Filter]) -> str:
        meaningful = [step.function for step in steps if step.function not in ("take_first", "take_last")]
        last = meaningful[-1] if meaningful else ""
        return {"number": "no number found in the response", "choice_letter": "no option letter found"}.get(
            last, "no answer found in the response"
        )

    @staticmethod
    def _reason(metric: Metric, correct: bool, shown: str, gold: str) -> str:
        if isinstance(metric, Choice):
            return f"chose {shown}, correct" if correct else f"chose {shown}, expected {gold}"
        return f"final answer {shown} matches" if correct else f"final answer {shown}, expected {gold}"

    # ---- the instructor side ------------------------------------------------------------

    def normalize_answer(self, text: str) -> str | None:
        metric = self.metrics[0][1]
        if self.multiple_choice:
            return Choice().normalize(text)
        extracted = run_filters(self.filters[0][1], str(text), {})
        return metric.normalize(extracted) if extracted is not None else None

    def check_generated(self, item: dict[str, Any]) -> tuple[str, str, str]:
        instructor = self.spec.lai.instructor
        if instructor is None:
            return super().check_generated(item)
        if self.multiple_choice:
            question, solution, answer = MultipleChoiceTask.check_generated(self, item)  # type: ignore[arg-type]
        else:
            try:
                question = render(instructor.question, item, "question").strip()
                solution = render(instructor.solution, item, "solution").strip()
                answer = render(instructor.answer, item, "answer").strip()
            except DataError as error:
                raise SampleRejected(f"missing field ({error.message})") from None
        context = {**item, "question": question, "solution": solution, "answer": answer}
        for rule in instructor.rules:
            try:
                ok = holds(rule.check, context, rule.check)
            except DataError:
                ok = False
            if not ok:
                raise SampleRejected(rule.reason)
        normalized = self.normalize_answer(answer)
        if normalized is None:
            raise SampleRejected("final answer cannot be read")
        return question, solution, normalized

    def training_target(self, solution: str, answer: str) -> str:
        instructor = self.spec.lai.instructor
        if instructor is None:
            return super().training_target(solution, answer)
        if self.multiple_choice:
            return MultipleChoiceTask.training_target(self, solution, answer)  # type: ignore[arg-type]
        return render(instructor.training_target, {"solution": solution, "answer": answer}, "training_target").strip()

    def reference_sample(self, sample: Sample) -> tuple[str, str, str] | None:
        if self.multiple_choice:
            return sample.question, str(sample.meta.get("solution") or ""), sample.reference
        solution = str(sample.meta.get("solution") or "")
        return (sample.question, solution, sample.reference) if solution else None

    def runnable_sample(self, sample: GeneratedSample) -> tuple[Sample, str] | None:
        """With a metric that runs code (``unit_tests``), verify runs a written sample's
        solution, in its training form, against the sample's own tests."""
        if self.spec.lai.instructor is None or not getattr(self.metrics[0][1], "executes", False):
            return None
        runnable = Sample(id=sample.id, task=self.name, question=sample.question, reference=sample.answer)
        return runnable, self.training_target(sample.solution, sample.answer)

    def training_sample(self, question: str) -> Sample:
        if not self.multiple_choice:
            return super().training_sample(question)
        stem, options = parse_question(question)
        return Sample(id="generated", task=self.name, question=question, reference="", meta={"options": options, "stem": stem})


# ---- building the class --------------------------------------------------------------------


def read_table(path: Path, task: str, pool: str, named_in: str = "") -> list[dict[str, Any]]:
    """Rows of a JSONL, CSV or Parquet file; a missing or unreadable file is one line."""
    if not path.is_file():
        where = f" (named in {named_in})" if named_in else ""
        raise DataError(f"data file for {task}/{pool} not found: {path}{where}", hint="fix the path; it is relative to the task file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: a spreadsheet's byte-order mark
                rows = _csv_rows(path, csv.DictReader(handle))
        except (UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"{path} is not a readable CSV file ({error})") from None
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # an optional dependency, only for parquet files

            rows = pq.read_table(path).to_pylist()
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow", hint="pip install pyarrow") from None
        except Exception as error:  # noqa: BLE001 - a damaged file, whatever pyarrow calls it
            raise DataError(f"{path} is not a readable parquet file ({type(error).__name__}: {error})") from None
    else:
        rows = read_jsonl_rows(path, ())
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


def _csv_rows(path: Path, reader: csv.DictReader[str]) -> list[dict[str, Any]]:
    """A CSV file's rows; a row with more or fewer fields than the header (csv fills the
    gap with None, which a template renders as "None") or a header naming a column twice
    is a DataError naming the line."""
    header = reader.fieldnames or []
    if len(set(header)) < len(header):
        twice = next(name for name in header if header.count(name) > 1)
        raise DataError(f"{path}:1: the header names column {twice!r} twice", hint="give every column its own name")
    rows = []
    for row in reader:
        extra = row.pop(None, None)  # type: ignore[call-overload]  # the fields past the header
        if extra or None in row.values():
            count = sum(value is not None for value in row.values()) + len(extra or [])
            raise DataError(
                f"{path}:{reader.line_num}: {count} field(s) where the header has {len(header)}",
                hint="fix or remove that row (a field with a comma or a line break must be quoted)",
            )
        rows.append(dict(row))
    return rows


def task_class(path: Path, origin: str | None = None) -> type[FileTask]:
    """Read a task file and make its Task class (templates registered, names checked)."""
    path = Path(path).resolve()
    spec, where = read_spec(path)
    local = spec.dataset_path in LOCAL_FORMATS
    files = spec.dataset_kwargs.get("data_files") or {}
    local_files = {
        split: [(path.parent / f).resolve() for f in ([paths] if isinstance(paths, str) else paths)]
        for split, paths in files.items()
        if split in spec.splits()
    }
    pools = {
        split: PoolSource(
            tuple(spec.lai.data_folder.get(split, ())), tuple(spec.lai.required_fields),
            None if local else (str(spec.dataset_path), spec.dataset_name, split),
        )  # fmt: skip
        for split in spec.splits()
    }
    attributes = {
        "name": spec.task, "pools": pools, "spec": spec, "where": where, "local_files": local_files,
        "origin": origin or str(path), "__module__": __name__, **instructor_side(spec, where),
    }  # fmt: skip
    return type(f"FileTask_{spec.task}", (FileTask,), attributes)


@cache
def shipped(name: str) -> type[FileTask]:
    cls = task_class(FILES / SHIPPED[name], origin=f"built-in task file lai/tasks/files/{SHIPPED[name]}")
    if cls.name != name:
        raise ConfigError(f"{FILES / SHIPPED[name]}: task is {cls.name!r}, registered as {name!r}")
    return cls


def __getattr__(name: str) -> type[FileTask]:
    """``lai.tasks.from_file:gsm8k_yaml``: how lai.tasks registers the shipped files lazily."""
    if name in SHIPPED:
        return shipped(name)
    raise AttributeError(name)


# ---- finding user task files -----------------------------------------------------------------

#: Names registered from user task files -> the file (a second registration of the same file is a no-op).
_USER: dict[str, Path] = {}


def task_files(include: Path) -> list[Path]:
    """The task files of an include path: the file itself, or every YAML file under the
    folder whose top level has a ``task`` key."""
    include = Path(include).expanduser()
    if include.is_file():
        return [include]
    if not include.is_dir():
        raise ConfigError(f"include path not found: {include}", hint="give a folder of task .yaml files, or one task file")
    found = []
    for path in sorted([*include.rglob("*.yaml"), *include.rglob("*.yml")]):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError, ValueError, RecursionError):
            raw = {"task": None}  # read_spec names the problem
        if isinstance(raw, dict) and "task" in raw:
            found.append(path)
    return found


def register_task_files(includes: list[Path] | tuple[Path, ...]) -> list[str]:
    """Register the tasks of every include path; return their names."""
    names = []
    for include in includes:
        for path in task_files(Path(include)):
            names.append(register_task_file(path))
    return names


def register_task_file(path: Path) -> str:
    path = Path(path).resolve()
    cls = task_class(path)
    name = cls.name
    if _USER.get(name) == path:
        return name
    if name in _USER:
        raise ConfigError(f"{cls.where('task')}: task {name!r} is also defined by {_USER[name]}", hint="rename one of them")
    if name in TASKS:
        raise ConfigError(f"{cls.where('task')}: task {name!r} is a built-in task", hint="give your task another name")
    TASKS.register(name, cls)
    _USER[name] = path
    return name


def user_task_files() -> list[Path]:
    """The task files registered in this process (lai.tasks.task_setup hands them on)."""
    return list(_USER.values())


def forget_user_tasks() -> None:
    """Unregister the tasks of user files (tests: each starts from the built-ins)."""
    for name in list(_USER):
        TASKS.unregister(name)
        del _USER[name]


def fingerprint(name: str) -> str | None:
    """sha256 of a file task's YAML and its local data files (None for a class task), so a
    resume can tell that the task it finds is the one the run started with."""
    import hashlib

    cls = TASKS.get(name) if name in TASKS else None
    if not (isinstance(cls, type) and issubclass(cls, FileTask)):
        return None
    digest = hashlib.sha256()
    for path in [cls.where.path, *(f for files in cls.local_files.values() for f in files)]:
        digest.update(str(path).encode() + b"\0")
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def origin_of(name: str) -> str:
    """Where a registered task comes from, for ``lai tasks``."""
    cls = TASKS.get(name)
    if isinstance(cls, type) and issubclass(cls, FileTask):
        return cls.origin
    return f"built-in class {cls.__module__}.{cls.__qualname__}"
