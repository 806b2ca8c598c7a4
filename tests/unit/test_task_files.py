"""Task files (lai.tasks.spec, lai.tasks.from_file): what they read, and a table of bad
task files, each one line naming the file, the key and the line (issue 16, item 1).

The table runs the real ``lai`` command (``validate``, ``tasks``, ``run``) in a forked
child per case, like tests/unit/test_bad_inputs.py: exit status 2, one ``error:`` line on
stderr, no traceback.
"""

from __future__ import annotations

import importlib
import json
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lai.errors import DataError
from lai.records import Sample
from lai.tasks import TASKS, get_task
from lai.tasks.from_file import FileTask, forget_user_tasks, register_task_files, task_class
from lai.tasks.metrics import METRICS, Metric, Verdict
from tests.helpers.forked_cli import exit_code, start_forked

GOOD = """\
task: my_task
dataset_path: json
dataset_kwargs:
  data_files: {train: train.jsonl, test: test.jsonl}
training_split: train
test_split: test
doc_to_text: "{{ q }}"
doc_to_target: "{{ a }}"
filter_list:
  - name: last-number
    filter:
      - {function: regex, regex_pattern: "(-?[0-9.]+)", group_select: -1}
metric_list:
  - {metric: exact_match, ignore_case: true}
lai:
  id_field: id
  instructor:
    description: adding small numbers
    rules:
      - {check: "question is search('[0-9]')", reason: no number}
"""
LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 8))  # 9**8 items, aliased
ROWS = [{"id": f"r{i}", "q": f"What is {i} + 1?", "a": str(i + 1)} for i in range(6)]


def write_task(folder: Path, text: str = GOOD, name: str = "my_task.yaml", rows: list[dict] | None = None) -> Path:
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (rows or ROWS)))
    path = folder / name
    path.write_text(text)
    return path


def edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    forget_user_tasks()
    yield
    forget_user_tasks()


# ---- what a task file reads ------------------------------------------------------------------


def test_a_task_file_is_a_task(tmp_path: Path) -> None:
    task = task_class(write_task(tmp_path))()
    samples = task.load("test")
    assert [s.id for s in samples][:2] == ["my_task/test/r0", "my_task/test/r1"]
    assert task.prompt(samples[1]) == [{"role": "user", "content": "What is 1 + 1?"}]
    assert task.prompt(samples[1], "lm-eval") == "What is 1 + 1?"
    assert task.score(samples[1], "so it is 2").correct
    assert task.score(samples[1], "so it is 3").reason == "final answer 3, expected 2"
    assert task.score(samples[1], "no idea").extracted is None
    assert task.instructor_templates == {k: f"{k}_task_my_task" for k in ("le", "lec", "random")}
    assert task.resolve_rule is None
    question, solution, answer = task.check_generated({"question": "What is 4 + 4?", "solution": "4 + 4 = 8", "answer": "8"})
    assert (question, answer) == ("What is 4 + 4?", "8")
    with pytest.raises(ValueError, match="no number"):
        task.check_generated({"question": "What is four plus four?", "solution": "8", "answer": "8"})
    assert task.training_target("4 + 4 = 8", "8") == "4 + 4 = 8\nThe answer is 8."


def test_csv_and_parquet_data_and_several_files_per_split(tmp_path: Path) -> None:
    import csv

    pa = pytest.importorskip("pyarrow")  # parquet files need pyarrow (the train extra brings it)
    pq = pytest.importorskip("pyarrow.parquet")

    with (tmp_path / "a.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "q", "a"])
        writer.writeheader()
        writer.writerows(ROWS[:3])
    pq.write_table(pa.Table.from_pylist(ROWS[3:]), tmp_path / "b.parquet")
    text = edit("data_files: {train: train.jsonl, test: test.jsonl}", "data_files: {train: train.jsonl, test: [a.csv, b.parquet]}")
    task = task_class(write_task(tmp_path, text))()
    assert [s.reference for s in task.load("test")] == [r["a"] for r in ROWS]


def test_a_csv_file_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path) -> None:
    path = write_task(tmp_path, edit("test: test.jsonl}", "test: test.csv}"))
    (tmp_path / "test.csv").write_text("\ufeffid,q,a\nr9,What is 8 + 1?,9\n", encoding="utf-8")  # as spreadsheets save it
    assert [s.id for s in task_class(path)().load("test")] == ["my_task/test/r9"]


def test_numeric_metric_with_tolerance_and_a_registered_metric(tmp_path: Path) -> None:
    text = edit("- {metric: exact_match, ignore_case: true}", "- {metric: numeric, tolerance: 0.5}")
    task = task_class(write_task(tmp_path, text))()
    sample = task.load("test")[2]  # reference 3
    assert task.score(sample, "about 3.4").correct and not task.score(sample, "about 3.6").correct

    class Always(Metric):  # how another module (the LLM judge) adds a metric
        def verdict(self, extracted: str, sample: Sample) -> Verdict:
            return Verdict(True, extracted, sample.reference)

    METRICS.register("always_test", Always)
    try:
        text = edit("- {metric: exact_match, ignore_case: true}", "- {metric: always_test}\n  - {metric: exact_match}")
        task = task_class(write_task(tmp_path, text))()
        score = task.score(sample, "it is 9")
        assert score.correct and score.metrics == {"always_test,last-number": True, "exact_match,last-number": False}
    finally:
        METRICS.unregister("always_test")


def test_include_path_registers_user_tasks_and_skips_other_yaml(tmp_path: Path) -> None:
    write_task(tmp_path)
    (tmp_path / "config.yaml").write_text("name: x\n")  # a run config beside it: not a task
    assert register_task_files([tmp_path]) == ["my_task"]
    assert register_task_files([tmp_path]) == ["my_task"]  # the same file again: a no-op
    assert isinstance(get_task("my_task"), FileTask)
    forget_user_tasks()
    assert "my_task" not in TASKS


def test_the_shipped_task_files_are_registered_under_their_own_names() -> None:
    for name in ("gsm8k_yaml", "arc_challenge_yaml"):
        assert TASKS.get(name).name == name


# ---- the table of bad task files -------------------------------------------------------------


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]
    needles: tuple[str, ...]


def validate(text: str, rows: list[dict] | None = None) -> Callable[[Path], list[str]]:
    return lambda f: ["validate", str(write_task(f, text, rows=rows))]


def csv_test_split(content: str) -> Callable[[Path], list[str]]:
    """lai validate with the test split read from a CSV file holding ``content``."""

    def make(folder: Path) -> list[str]:
        path = write_task(folder, edit("test: test.jsonl}", "test: test.csv}"))
        (folder / "test.csv").write_text(content, encoding="utf-8")
        return ["validate", str(path)]

    return make


def include(text: str, command: str = "tasks") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / "tasks").mkdir()
        write_task(folder / "tasks", text)
        return [command, "--include-path", str(folder / "tasks")]

    return make


def run_config(text: str) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        write_task(folder, text)
        config = {
            "name": "t", "include_path": ["."], "target": {"backend": "scripted", "model": "m"},
            "select": {"pools": [{"task": "my_task", "pool": "train", "n": 2}]}, "instructor": {"backend": "scripted"},
            "train": {"backend": "noop"}, "evaluate": {"benchmarks": [{"task": "my_task", "pool": "test"}]},
        }  # fmt: skip
        (folder / "run.yaml").write_text(yaml.safe_dump(config))
        return ["validate", str(folder / "run.yaml")]

    return make


def two_files(folder: Path) -> list[str]:
    write_task(folder, GOOD, "one.yaml")
    write_task(folder, GOOD, "two.yaml")
    return ["tasks", "--include-path", str(folder)]


CASES = [
    Case("missing doc_to_text", validate(edit('doc_to_text: "{{ q }}"\n', "")), ("my_task.yaml:1", "doc_to_text", "missing")),
    Case("unknown key", validate(GOOD + "doc_to_txt: x\n"), ("my_task.yaml:21", "doc_to_txt", "unknown key")),
    Case("duplicate key", validate(GOOD + "doc_to_text: x\n"), ("my_task.yaml", "doc_to_text", "appears twice", "line 7")),
    Case("not YAML", validate("task: [x\n"), ("my_task.yaml", "not valid YAML", "line 2")),
    Case("a list, not a mapping", validate("- task\n"), ("my_task.yaml", "mapping")),
    Case("unknown metric", validate(edit("metric: exact_match", "metric: exact_mach")), ("my_task.yaml:14", "metric_list", "unknown metric 'exact_mach'")),
    Case("metric option", validate(edit("ignore_case: true", "ignore_cases: true")), ("my_task.yaml:14", "ignore_cases")),
    Case("metric regex", validate(edit("ignore_case: true", "regexes_to_ignore: ['(']")), ("my_task.yaml:14", "metric_list", "does not compile")),
    Case("filter regex", validate(edit('regex_pattern: "(-?[0-9.]+)"', 'regex_pattern: "(-?[0-9.]+"')), ("my_task.yaml:12", "filter_list", "does not compile")),
    Case("unknown filter", validate(edit("function: regex,", "function: regexp,")), ("my_task.yaml:12", "unknown filter function 'regexp'")),
    Case("template syntax", validate(edit('doc_to_text: "{{ q }}"', 'doc_to_text: "{{ q }"')), ("my_task.yaml:7", "doc_to_text", "template syntax error")),
    Case("expression syntax", validate(edit("question is search('[0-9]')", "question is (")), ("my_task.yaml:20", "lai.instructor.rules.0.check", "syntax")),
    Case("missing field", validate(edit('doc_to_target: "{{ a }}"', 'doc_to_target: "{{ answer }}"')), ("doc_to_target", "'answer' is undefined", "first row")),
    Case("data file missing", validate(edit("test: test.jsonl}", "test: nope.jsonl}")), ("nope.jsonl", "not found", "my_task.yaml:4")),
    Case("no split", validate(edit("training_split: train\ntest_split: test\n", "")), ("my_task.yaml", "split")),
    Case("split without data", validate(edit("test_split: test", "test_split: dev")), ("my_task.yaml", "'dev' has no data file")),
    Case("bad task name", validate(edit("task: my_task", "task: 'my task'")), ("my_task.yaml:1", "task", "not a task name")),
    Case("lm-eval key lai does not read", validate(GOOD + "process_docs: x\n"), ("my_task.yaml:21", "process_docs", "not supported")),
    Case("!function", validate(GOOD + "process_results: !function utils.process\n"), ("my_task.yaml", "not valid YAML", "line 21", "!function")),
    Case("choice without options", validate(edit("task: my_task", "task: my_task\noutput_type: multiple_choice")), ("doc_to_choice",)),
    Case("choices not a list", validate(edit("task: my_task", "task: my_task\noutput_type: multiple_choice\ndoc_to_choice: '{{ q }}'")), ("doc_to_choice", "not a list")),
    Case("no such instructor template", validate(GOOD + "    templates: {le: le_nonexistent}\n"), ("my_task.yaml:21", "lai.instructor.templates.le", "le_nonexistent")),
    Case("clash with a built-in", include(edit("task: my_task", "task: gsm8k")), ("my_task.yaml:1", "'gsm8k' is a built-in task")),
    Case("two files, one name", two_files, ("two.yaml:1", "also defined by", "one.yaml")),
    Case("include path missing", lambda f: ["tasks", "--include-path", str(f / "nope")], ("include path not found", "nope")),
    Case("bad file through a run config", run_config(edit("metric: exact_match", "metric: f1")), ("my_task.yaml:14", "unknown metric 'f1'")),
    Case("bad file through lai eval", include(edit("metric: exact_match", "metric: f1"), "eval"), ("unknown metric 'f1'",)),
    Case("data file list of numbers", validate(edit("{train: train.jsonl,", "{train: [5],")), ("my_task.yaml:4", "data_files", "mapping of split")),
    Case("doc_to_target a boolean", validate(edit('doc_to_target: "{{ a }}"', "doc_to_target: true")), ("my_task.yaml:8", "doc_to_target")),
    Case("group_select not a number", validate(edit("group_select: -1", "group_select: last")), ("my_task.yaml:12", "group_select must be a whole number")),
    Case("ignore_case not a boolean", validate(edit("ignore_case: true", "ignore_case: banana")), ("my_task.yaml:14", "ignore_case must be true or false")),
    Case("judge url without model", validate(edit("{metric: exact_match, ignore_case: true}", "{metric: llm_judge, base_url: 'http://127.0.0.1:9/v1'}")), ("my_task.yaml:14", "both base_url and model")),
    Case("judge structured_output", validate(edit("{metric: exact_match, ignore_case: true}", "{metric: llm_judge, structured_output: xml}")), ("my_task.yaml:14", "structured_output must be")),
    Case("prompt template field missing", validate(edit("lai:\n", "lai:\n  prompt: {paper: {template: '{{ foo }}'}}\n")), ("my_task.yaml:16", "lai.prompt.paper.template", "'foo' is undefined")),
    Case("two rows, one id", validate(GOOD, rows=[{"id": "same", "q": "1 + 1?", "a": "2"}, {"id": "same", "q": "2 + 1?", "a": "3"}]), ("two rows have the id 'my_task/train/same'", "id_field")),
    Case("billion laughs", validate("l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + LAUGHS + GOOD), ("my_task.yaml:1", "l0", "unknown key")),
    Case("CSV row short of the header", csv_test_split('id,q,a\nr1,"What is 1 + 1?,2\n'), ("test.csv:2", "2 field(s) where the header has 3")),
    Case("CSV header names a column twice", csv_test_split("id,q,a,a\nr1,What is 1 + 1?,2,3\n"), ("test.csv:1", "column 'a' twice")),
    Case("template loops too long", validate(edit('doc_to_text: "{{ q }}"', 'doc_to_text: "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}{{ q }}"')), ("my_task.yaml:7", "doc_to_text", "took over 1 s on one row")),
    Case("template regex backtracks", validate(edit('doc_to_text: "{{ q }}"', "doc_to_text: \"{{ q }}{% if ('a' * 40 + '!') is search('(a+)+$') %}{% endif %}\"")), ("my_task.yaml:7", "doc_to_text", "took over 1 s")),
    Case("instructor template unknown placeholder", validate(GOOD + '    templates: {le: "Write $n like $question; $nonsense"}\n'), ("my_task.yaml:21", "lai.instructor.templates.le", "$nonsense", "does not fill")),
    Case("instructor template lone dollar", validate(GOOD + '    templates: {random: "Write $n like $question for 5$"}\n'), ("my_task.yaml:21", "lai.instructor.templates.random", "write $$ for a dollar sign")),
    Case("lone surrogate escape", validate(edit("description: adding small numbers", 'description: "adding \\ud800 numbers"')), ("my_task.yaml:18", "lai.instructor.description", "surrogate")),
    Case("empty stop string", validate(edit("metric_list:", "generation_kwargs: {until: ['']}\nmetric_list:")), ("my_task.yaml:13", "generation_kwargs.until", "must not be empty")),
    Case("tolerance infinite", validate(edit("{metric: exact_match, ignore_case: true}", "{metric: numeric, tolerance: .inf}")), ("my_task.yaml:14", "finite number")),
    Case("question renders empty", validate(edit('doc_to_text: "{{ q }}"', "doc_to_text: \"{{ q if false else '' }}\"")), ("my_task.yaml:7", "doc_to_text: renders empty", "first row")),
    Case("answer renders empty", validate(edit('doc_to_target: "{{ a }}"', 'doc_to_target: " "')), ("my_task.yaml:8", "doc_to_target: renders empty", "first row")),
    Case("sample schema type", validate(GOOD + "    sample_schema: {type: object, properties: {question: {type: text}, answer: {type: string}}}\n"), ("my_task.yaml:21", "lai.instructor.sample_schema", "property 'question' needs a JSON type")),
    Case("example of another shape", validate(GOOD + "    example: {prompt: 'What is 1 + 1?', result: '2'}\n"), ("my_task.yaml:21", "lai.instructor.example", "question template does not fit", "'question' is undefined")),
    Case("template multiplies a string", validate(edit('doc_to_text: "{{ q }}"', "doc_to_text: \"{{ 'a' * 10**10 }}\"")), ("my_task.yaml:7", "doc_to_text", "more than 1000000 items")),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    for module in ("lai.cli", "lai.config", "lai.preflight", "lai.eval_command", "lai.tasks.from_file", "lai.tasks.lm_eval_task"):
        importlib.import_module(module)  # imported once here, shared by the forked cases
    import lai.tasks.spec as spec

    limit = spec.TEMPLATE_LIMIT_S
    spec.TEMPLATE_LIMIT_S = 1.0  # inherited by the forked cases: a template that runs too long stops in 1 s, not 5
    # Each case is its own forked child (what it registers stays there), so they run four
    # at once; each child is waited for by its pid, the oldest first.
    running: list[tuple[str, int, Path]] = []
    results: dict[str, tuple[int, str]] = {}

    def reap_oldest() -> None:
        name, pid, streams = running.pop(0)
        results[name] = (exit_code(pid), (streams / "stderr").read_text(errors="replace"))

    try:
        for case in CASES:
            folder = tmp_path_factory.mktemp("case")
            args = case.make(folder)
            if args[0] == "eval":
                args += ["--model", "m", "--backend", "scripted", "--tasks", "my_task", "--out", str(folder / "out")]
            streams = tmp_path_factory.mktemp("streams")
            if len(running) >= 4:
                reap_oldest()
            running.append((case.name, start_forked(args, folder, streams), streams))
    finally:  # whatever happened, no child is left behind
        while running:
            reap_oldest()
        spec.TEMPLATE_LIMIT_S = limit
    return results


def test_the_table_is_distinct() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_task_file_is_one_line_naming_it(case: Case, outcomes: dict[str, tuple[int, str]]) -> None:
    code, stderr = outcomes[case.name]
    assert code == 2, f"exit {code}\n{stderr}"
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in case.needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def test_a_good_task_file_validates(tmp_path: Path) -> None:
    path = write_task(tmp_path)
    assert exit_code(start_forked(["validate", str(path)], tmp_path, tmp_path)) == 0, (tmp_path / "stderr").read_text()
    assert "ok:" in (tmp_path / "stderr").read_text() and "test: 6 rows" in (tmp_path / "stderr").read_text()


def test_a_row_without_its_id_field_is_skipped_and_counted_not_numbered(tmp_path: Path) -> None:
    rows = [{"id": "r0", "q": "What is 1 + 1?", "a": "2"}, {"q": "What is 2 + 1?", "a": "3"}]
    task = task_class(write_task(tmp_path, rows=rows))()
    assert [s.id for s in task.load("test")] == ["my_task/test/r0"]  # not "my_task/test/1"
    assert task.skipped("test") == ["1"]
    with pytest.raises(DataError, match=r"row 1: no 'id' \(lai.id_field"):
        task.load("test", strict=True)


def test_the_docs_name_every_key() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "task_files.md").read_text()
    for key in textwrap.dedent("""
        task output_type dataset_path dataset_name dataset_kwargs data_files training_split validation_split
        test_split doc_to_text doc_to_target doc_to_choice target_delimiter generation_kwargs until max_gen_toks
        filter_list metric_list regex_pattern group_select take_first exact_match ignore_case ignore_punctuation
        regexes_to_ignore numeric tolerance choice_letter id_field data_folder required_fields require
        reference_solution prompt chat instructor sample_schema training_target rules resolve resolve_template
        resolve_schema templates example description include_path --include-path llm_judge METRICS.register
    """).split():
        assert f"`{key}" in docs, key


def test_a_hub_dataset_is_named_and_not_fetched_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAI_DATA_DIR", str(tmp_path / "no-data"))
    text = edit("dataset_path: json\ndataset_kwargs:\n  data_files: {train: train.jsonl, test: test.jsonl}\n", "dataset_path: someone/my_dataset\ndataset_name: main\n")
    task = task_class(write_task(tmp_path, text))()
    assert task.pools["test"].hub == ("someone/my_dataset", "main", "test")
    with pytest.raises(Exception, match=r"hub dataset someone/my_dataset \(main\) split test \(skipped: HF_HUB_OFFLINE"):
        task.load("test")


def test_the_lai_filters() -> None:
    from lai.tasks.metrics import Filter, run_filters

    def run(function: str, text: str, options: dict[str, str] | None = None) -> str | None:
        return run_filters([Filter(function, {})], text, options or {})

    assert run("code_block", "Here:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1"
    assert run("number", "$1,234.50") == "1234.5" and run("number", "many") is None
    assert run("choice_letter", "I pick **(C)**", {"A": "x", "B": "y", "C": "z"}) == "C"
    assert run("whole", "  all of it \n") == "all of it"


def test_lai_run_with_include_path_saves_it_and_resumes_without_it(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    write_task(tmp_path / "tasks")
    config = {
        "name": "t", "target": {"backend": "scripted", "model": "m"}, "instructor": {"backend": "scripted"},
        "select": {"pools": [{"task": "my_task", "pool": "train", "n": 2}]}, "strategy": {"embedder": "hashing"},
        "train": {"backend": "noop"}, "evaluate": {"benchmarks": [{"task": "my_task", "pool": "test"}]},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    for args in (["run", "run.yaml", "--include-path", "tasks", "--run-dir", "out"], ["run", "--run-dir", "out"]):
        assert exit_code(start_forked(args, tmp_path, tmp_path)) == 0, (tmp_path / "stderr").read_text()[-2000:]
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["include_path"] == [str((tmp_path / "tasks").resolve())]
    assert (tmp_path / "out" / "iter_01" / "evaluate.done").exists()


def test_a_resume_refuses_a_task_file_edited_since_the_run_started(tmp_path: Path) -> None:
    """The run's config is unchanged, but the task it names is not: resuming would score the
    later iterations on another task than the first (two experiments in one folder)."""
    (tmp_path / "tasks").mkdir()
    task_file = write_task(tmp_path / "tasks")
    config = {
        "name": "t", "include_path": ["tasks"], "target": {"backend": "scripted", "model": "m"},
        "instructor": {"backend": "scripted"}, "strategy": {"embedder": "hashing"}, "train": {"backend": "noop"},
        "select": {"pools": [{"task": "my_task", "pool": "train", "n": 2}]},
        "evaluate": {"benchmarks": [{"task": "my_task", "pool": "test"}]},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = ["run", "run.yaml", "--run-dir", "out"]
    assert exit_code(start_forked(run, tmp_path, tmp_path)) == 0, (tmp_path / "stderr").read_text()[-2000:]
    task_file.write_text(GOOD.replace('doc_to_text: "{{ q }}"', 'doc_to_text: "Q: {{ q }}"'))
    assert exit_code(start_forked([*run, "--set", "iterations=2"], tmp_path, tmp_path)) == 2
    lines = [line for line in (tmp_path / "stderr").read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and "other versions of task file(s) my_task" in lines[0], lines
    assert not (tmp_path / "out" / "iter_02").exists()
    task_file.write_text(GOOD)  # put back: the run resumes
    assert exit_code(start_forked(run, tmp_path, tmp_path)) == 0, (tmp_path / "stderr").read_text()[-2000:]


def test_lai_eval_into_the_same_folder_refuses_a_task_file_edited_since(tmp_path: Path) -> None:
    task_file = write_task(tmp_path)
    args = ["eval", "--tasks", "my_task", "--include-path", ".", "--backend", "scripted", "--model", "m", "--out", "out"]
    assert exit_code(start_forked(args, tmp_path, tmp_path)) == 0, (tmp_path / "stderr").read_text()[-2000:]
    task_file.write_text(edit("ignore_case: true", "ignore_case: false"))
    assert exit_code(start_forked(args, tmp_path, tmp_path)) == 2
    assert "differs in: task_files" in (tmp_path / "stderr").read_text()


def test_a_regex_that_backtracks_catastrophically_stops_lai_eval_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``(.*\\s*)*!`` on the scripted reply would run for ages (Ctrl-C the only way out);
    a task file's regex gets REGEX_LIMIT_S per reply. The scoring stage's progress bar may
    precede the error on stderr."""
    import lai.tasks.metrics as metrics

    monkeypatch.setattr(metrics, "REGEX_LIMIT_S", 0.5)  # the forked child inherits it
    write_task(tmp_path, edit('regex_pattern: "(-?[0-9.]+)"', 'regex_pattern: "(.*\\\\s*)*!"'))
    args = ["eval", "--tasks", "my_task", "--include-path", ".", "--backend", "scripted", "--model", "m", "--out", "out"]
    assert exit_code(start_forked(args, tmp_path, tmp_path)) == 2
    stderr = (tmp_path / "stderr").read_text()
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1, stderr
    assert "'(.*\\\\s*)*!' took over 0.5 s on one reply" in errors[0] and "backtracks catastrophically" in errors[0]
