"""lm-evaluation-harness tasks as lai benchmarks and pools (``lm_eval_task``, lai[lm-eval]).

Two tiny lm-eval tasks of our own (tests/fixtures/lm_eval: one generate_until task with
two filters, one multiple_choice task, both reading local JSONL files through lm-eval's
``dataset_path: json`` + ``dataset_kwargs.data_files``) are run through lai and checked:

- fast: the config entry (one-line errors, lm-eval missing), the prompts lai builds are
  lm-eval's, and lm-eval's filters and metrics score a fake target's answers;
- slow (a real tiny model): lai's HF target and ``lm_eval.simple_evaluate`` with lm-eval's
  own ``HFLM`` on the same rows give the same prompts, responses and per-item metrics.

Nothing reaches the hub (conftest sets HF_HUB_OFFLINE / HF_DATASETS_OFFLINE).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lai.config import build_config
from lai.errors import ConfigError
from lai.records import Attempt
from lai.scoring import answer_and_score
from lai.targets.base import Prompt, Target

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval"
GEN, MC = "lai_fixture_gen", "lai_fixture_mc"


def rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def data_files(prefix: str) -> dict[str, Any]:
    """The fixture's data files as absolute paths (lai's dataset_kwargs override)."""
    return {"data_files": {"train": str(FIXTURES / f"{prefix}_train.jsonl"), "test": str(FIXTURES / f"{prefix}_test.jsonl")}}


def config(benchmarks: list[dict[str, Any]], pools: list[dict[str, Any]] | None = None) -> Any:
    raw: dict[str, Any] = {"evaluate": {"benchmarks": benchmarks}}
    if pools is not None:
        raw["select"] = {"pools": pools}
    return build_config(raw)


# ---- the config entry -------------------------------------------------------------------


def test_without_lm_eval_the_entry_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(ConfigError) as caught:
        config([{"lm_eval_task": GEN, "include_path": str(FIXTURES)}])
    message = str(caught.value)
    assert "\n" not in message
    assert "install lai[lm-eval]" in message.replace("'", "").replace("pip install ", "install ")


def test_the_entry_names_the_lai_task_and_the_split() -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    cfg = config(
        [{"lm_eval_task": MC, "include_path": str(FIXTURES), "dataset_kwargs": data_files("mc")}],
        [{"lm_eval_task": GEN, "include_path": str(FIXTURES), "dataset_kwargs": data_files("gen"), "n": 2}],
    )
    bench, pool = cfg.evaluate.benchmarks[0], cfg.select.pools[0]
    assert (bench.task, bench.pool) == (f"lm_eval:{MC}", "test")  # the split lm-eval evaluates on
    assert (pool.task, pool.pool) == (f"lm_eval:{GEN}", "train")
    # a config without lm-eval entries saves exactly as before (no new null keys)
    assert "lm_eval_task" not in config([{"task": "gsm8k"}]).model_dump()["evaluate"]["benchmarks"][0]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        pytest.param(  # not in include_path: lai then reads lm-eval's whole catalogue (~15,000 task files, ~5 s)
            {"lm_eval_task": "no_such_task_anywhere", "include_path": str(FIXTURES)},
            "unknown lm-eval task 'no_such_task_anywhere'",
            marks=pytest.mark.slow,
        ),
        ({"lm_eval_task": MC, "include_path": str(FIXTURES), "pool": "validation"}, "has no validation split"),
        ({"task": "gsm8k", "include_path": str(FIXTURES)}, "only applies with lm_eval_task"),
        ({"task": "gsm8k", "lm_eval_task": MC, "include_path": str(FIXTURES)}, "not both"),
        ({"lm_eval_task": MC, "include_path": str(FIXTURES / "missing")}, "does not exist"),
    ],
)
def test_bad_entries_get_one_line_errors(entry: dict[str, Any], words: str) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    with pytest.raises(ConfigError) as caught:
        config([entry])
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_paths_in_a_config_file_are_relative_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    import shutil

    from lai.config import load_config
    from lai.tasks import get_task

    shutil.copytree(FIXTURES, tmp_path / "tasks")
    (tmp_path / "run.yaml").write_text(
        "evaluate:\n  benchmarks:\n    - lm_eval_task: lai_fixture_gen\n      include_path: tasks\n"
        "      dataset_kwargs: {data_files: {train: tasks/gen_train.jsonl, test: tasks/gen_test.jsonl}}\n"
    )
    monkeypatch.chdir(tmp_path.parent)  # not the config's folder
    bench = load_config(tmp_path / "run.yaml").evaluate.benchmarks[0]
    assert bench.include_path == tmp_path / "tasks"
    assert bench.dataset_kwargs == {"data_files": {"train": str(tmp_path / "tasks" / "gen_train.jsonl"), "test": str(tmp_path / "tasks" / "gen_test.jsonl")}}
    assert len(get_task(bench.task).load(bench.pool)) == len(rows("gen_test.jsonl"))


# ---- prompts and scoring on a fake target -------------------------------------------------


class FakeTarget(Target):
    """Answers with the right sum for even rows, a wrong one for odd; ranks the gold choice first."""

    def __init__(self, gold: dict[str, str]) -> None:
        super().__init__("fake")
        self.gold = gold  # context -> the continuation to prefer
        self.seen: list[tuple[Prompt, tuple[str, ...], int]] = []

    def generate(self, prompts: list[Prompt], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        self.seen += [(p, tuple(stop), max_new_tokens) for p in prompts]
        return [f" {self.gold[p]} apples" if i % 2 == 0 else " 1000" for i, p in enumerate(prompts)]  # type: ignore[index]

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        return [-1.0 if self.gold[context] == continuation else -5.0 for context, continuation in pairs]  # type: ignore[index]


@pytest.fixture
def lm_tasks() -> dict[str, Any]:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    from lai.tasks import get_task

    config(
        [
            {"lm_eval_task": GEN, "include_path": str(FIXTURES), "dataset_kwargs": data_files("gen")},
            {"lm_eval_task": MC, "include_path": str(FIXTURES), "dataset_kwargs": data_files("mc")},
        ]
    )
    return {name: get_task(f"lm_eval:{name}") for name in (GEN, MC)}


def test_prompts_are_lm_evals_few_shot_contexts(lm_tasks: dict[str, Any]) -> None:
    gen = lm_tasks[GEN]
    samples = gen.load("test")
    assert [s.reference for s in samples] == [r["answer"] for r in rows("gen_test.jsonl")]
    for sample, row in zip(samples, rows("gen_test.jsonl"), strict=True):
        context = gen.prompt(sample)
        assert context.endswith(f"Q: {row['question']}\nA:")
        assert context.count("Q: ") == 3  # num_fewshot: 2, from the training split
    train = gen.load("train")
    for sample in train:  # a training row is never its own few-shot example
        assert gen.prompt(sample).count(sample.question) == 1
    assert gen.generation().stop == ("\n", "Q:") and gen.generation().max_new_tokens == 6
    mc = lm_tasks[MC]
    item = mc.choices(mc.load("test")[0])
    assert item.continuations == [" red", " green", " blue", " yellow"] and item.gold == 2


def test_lm_evals_filters_and_metrics_score_a_fake_target(lm_tasks: dict[str, Any], tmp_path: Path) -> None:
    gen, mc = lm_tasks[GEN], lm_tasks[MC]
    gen_samples, mc_samples = gen.load("test"), mc.load("test")
    gold = {gen.prompt(s): s.reference for s in gen_samples}
    gold |= {mc.prompt(s): mc.choices(s).continuations[mc.choices(s).gold] for s in mc_samples}
    target = FakeTarget(gold)
    attempts: list[Attempt] = answer_and_score(
        target, {gen.name: gen}, gen_samples, tmp_path / "gen.jsonl", batch_size=2, max_new_tokens=99
    )
    assert {stop for _, stop, _ in target.seen} == {("\n", "Q:")} and {n for _, _, n in target.seen} == {6}
    for i, attempt in enumerate(attempts):
        right = i % 2 == 0
        # "number" takes the first number (" 11 apples" -> "11"); "whole" compares all the text
        assert attempt.metrics == {"exact_match,number": float(right), "exact_match,whole": 0.0}
        assert attempt.correct is right
        assert attempt.extracted == (attempt.reference if right else "1000")
    choice = answer_and_score(
        target, {mc.name: mc}, mc_samples, tmp_path / "mc.jsonl", batch_size=2, max_new_tokens=8, mode="loglikelihood"
    )
    assert all(a.correct and a.metrics == {"acc,none": 1.0, "acc_norm,none": 1.0} for a in choice)


def test_a_written_sample_is_checked_and_taught_as_one_chat_turn(lm_tasks: dict[str, Any]) -> None:
    from lai.tasks.base import SampleRejected

    gen = lm_tasks[GEN]
    question, _, answer = gen.check_generated({"question": "Q: What is 2 plus 2?\nA:", "answer": 4})
    assert gen.prompt(gen.training_sample(question)) == [{"role": "user", "content": "Q: What is 2 plus 2?\nA:"}]
    assert gen.training_target("", answer) == "4"
    with pytest.raises(SampleRejected):
        gen.check_generated({"question": "", "answer": "4"})
    assert gen.instructor_template("le") == "le_lm_eval"


# ---- the same rows through lai and through lm-eval, with a real tiny model ---------------


def test_lai_and_lm_eval_agree_per_item(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from lai.eval_command import evaluate_model

    monkeypatch.chdir(FIXTURES)  # the YAMLs' data_files are relative, as lm-eval reads them
    config([{"lm_eval_task": GEN, "include_path": str(FIXTURES)}, {"lm_eval_task": MC, "include_path": str(FIXTURES)}])
    summary = evaluate_model(
        str(tiny_model_dir), [f"lm_eval:{GEN}", f"lm_eval:{MC}"], tmp_path / "lai", batch_size=4, max_new_tokens=32,
        target_options={"device": "cpu"},
    )  # fmt: skip
    ours = {
        name: {int(r["id"].rsplit("/", 1)[1]): r for r in map(json.loads, (tmp_path / "lai" / f"lm_eval:{name}.jsonl").read_text().splitlines())}
        for name in (GEN, MC)
    }
    model = HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=1)
    results = simple_evaluate(
        model=model, tasks=[GEN, MC], task_manager=TaskManager(include_path=str(FIXTURES)), log_samples=True
    )
    theirs = results["samples"]

    assert any(r["response"].strip() for r in ours[GEN].values())  # the model said something to compare
    by_doc: dict[int, dict[str, Any]] = {}
    for item in theirs[GEN]:
        by_doc.setdefault(item["doc_id"], {})[item["filter"]] = item
    assert set(by_doc) == set(ours[GEN]) and len(by_doc) == len(rows("gen_test.jsonl"))
    for doc_id, filters in by_doc.items():
        record = ours[GEN][doc_id]
        first = filters["number"]
        assert record["prompt"] == first["arguments"][0][0]
        assert record["response"] == first["resps"][0][0]
        for name, item in filters.items():
            assert record["metrics"][f"exact_match,{name}"] == item["exact_match"], (doc_id, name)
        assert record["extracted"] == first["filtered_resps"][0]

    assert len(theirs[MC]) == len(ours[MC]) == len(rows("mc_test.jsonl"))
    for item in theirs[MC]:
        record = ours[MC][item["doc_id"]]
        assert record["prompt"] == item["arguments"][0][0]
        lls = [float(resp[0][0]) for resp in item["resps"]]
        logged = [float(part.split("=")[1]) for part in record["response"].split()]
        assert logged == pytest.approx(lls, abs=2e-3)
        assert record["metrics"] == {"acc,none": item["acc"], "acc_norm,none": item["acc_norm"]}
    for name in (GEN, MC):  # and the task scores match lm-eval's aggregate
        metric = "exact_match,number" if name == GEN else "acc,none"
        assert summary["tasks"][f"lm_eval:{name}"][metric] == pytest.approx(results["results"][name][metric])


def test_a_whole_run_on_fakes_with_lm_eval_pools_and_benchmarks(tmp_path: Path) -> None:
    """Both fixture tasks as pools (a generation and a log-likelihood task collected
    together) and as benchmarks, the scripted target and instructor, the noop trainer."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    from lai.pipeline import Pipeline

    gen = {"lm_eval_task": GEN, "include_path": str(FIXTURES), "dataset_kwargs": data_files("gen")}
    mc = {"lm_eval_task": MC, "include_path": str(FIXTURES), "dataset_kwargs": data_files("mc")}
    raw = {
        "name": "lm-eval-fake", "seed": 3,
        "target": {"backend": "scripted", "model": "fake-model", "batch_size": 4},
        "select": {"pools": [{**gen, "n": 4}, {**mc, "n": 3}]},
        "instructor": {"backend": "scripted", "model": "fake-teacher", "concurrency": 1},
        "strategy": {"name": "le", "budget": 6, "embedder": "hashing"},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [gen, mc]},
    }  # fmt: skip
    run = tmp_path / "run"
    Pipeline(build_config(raw), run).run()
    collect = [json.loads(line) for line in (run / "iter_01" / "collect.jsonl").read_text().splitlines()]
    assert {r["task"] for r in collect} == {f"lm_eval:{GEN}", f"lm_eval:{MC}"}
    assert all(set(r["metrics"]) == {"acc,none", "acc_norm,none"} for r in collect if r["task"] == f"lm_eval:{MC}")
    requests = [json.loads(line) for line in (run / "iter_01" / "instruct.jsonl").read_text().splitlines()]
    assert requests and {r["template"] for r in requests} == {"le_lm_eval"}
    assert (run / "iter_01" / "verified.jsonl").read_text().strip()
    assert sorted(p.name for p in (run / "iter_01" / "eval").iterdir()) == [f"lm_eval:{GEN}-test.jsonl", f"lm_eval:{MC}-test.jsonl"]
    assert f"lm_eval:{GEN}/test" in (run / "report.md").read_text()


def test_lai_eval_runs_lm_eval_tasks_from_an_include_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    from typer.testing import CliRunner

    from lai.cli import app

    monkeypatch.chdir(FIXTURES)  # the YAMLs' data_files are relative to the working folder
    names = f"lm_eval:{GEN},lm_eval:{MC}"
    common = ["eval", "--model", "fake", "--backend", "scripted", "--lm-eval-include-path", "."]
    result = CliRunner().invoke(app, [*common, "--tasks", names, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tasks"][f"lm_eval:{GEN}"]["n"] == 5 and summary["tasks"][f"lm_eval:{MC}"]["scoring"] == "loglikelihood"


@pytest.mark.slow  # not in the include path: lai then reads lm-eval's whole catalogue (~15,000 task files, ~5 s)
def test_lai_eval_names_an_unknown_lm_eval_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    from typer.testing import CliRunner

    from lai.cli import app

    monkeypatch.chdir(FIXTURES)
    common = ["eval", "--model", "fake", "--backend", "scripted", "--lm-eval-include-path", "."]
    unknown = CliRunner().invoke(app, [*common, "--tasks", "lm_eval:nope", "--out", str(tmp_path / "x")])
    assert unknown.exit_code != 0 and "unknown lm-eval task 'nope'" in str(unknown.exception)  # main() prints it


def test_dataset_kwargs_without_the_few_shot_split_is_one_data_error() -> None:
    """dataset_kwargs replaces the task's own: the MC fixture reads few-shot examples from
    its train split, so giving only a test file left lm-eval's KeyError('train') to surface
    as an internal error."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the optional extra lai[lm-eval]")
    from lai.errors import DataError
    from lai.tasks import get_task

    entry = {"lm_eval_task": MC, "include_path": str(FIXTURES), "dataset_kwargs": {"data_files": {"test": str(FIXTURES / "mc_test.jsonl")}}}
    task = get_task(config([entry]).evaluate.benchmarks[0].task)
    with pytest.raises(DataError, match=r"its split 'train' has no data .*every split the task reads"):
        task.load("test")
