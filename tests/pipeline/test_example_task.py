"""examples/unit_conversions runs end to end: the task file found through the config's
include_path, the whole loop on fakes (scripted target and instructor, no-op trainer),
every stage reading the task the file defines (issue 16, item 5)."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path
from typing import Any

import pytest

from lai.config import load_config
from lai.pipeline import Pipeline
from lai.store import load_summaries
from lai.targets.scripted import ScriptedTarget
from lai.tasks import TASKS
from lai.tasks.from_file import forget_user_tasks

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "unit_conversions"

#: The example config with every model swapped for a fake (what a test may change).
FAKES = [
    "target.backend=scripted", "target.model=fake-model",
    "instructor.backend=scripted", "instructor.model=fake-teacher", "instructor.local.enabled=false",
    "strategy.embedder=hashing", "train.backend=noop", "verify.resolve.enabled=true",
]  # fmt: skip


FACTORS = runpy.run_path(str(EXAMPLE / "make_data.py"))["FACTORS"]
TIME_UNITS = {"hour", "hours", "minute", "minutes", "second", "seconds"}


def student(self: ScriptedTarget, prompt: Any) -> str:
    """A fake target with one misconception: it converts everything right, except that it
    believes an hour has 100 minutes and a minute 100 seconds."""
    text = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    match = re.search(r"How many (\w+) are in ([\d.]+) (\w+)\?", text)
    if not match:
        return "I am not sure."
    to, amount, unit = match.group(1), float(match.group(2)), match.group(3)
    for big, bigs, small, smalls, factor in FACTORS:
        if big in TIME_UNITS and small in TIME_UNITS:
            factor = {60: 100, 3600: 10000}.get(factor, factor)
        if unit in (big, bigs) and to == smalls:
            value = amount * factor
        elif unit == smalls and to == bigs:
            value = amount / factor
        else:
            continue
        shown = str(int(value)) if value == int(value) else f"{value:g}"
        return f"{match.group(2)} {unit} is {shown} {to}.\nThe answer is {shown}."
    return "I do not know these units."


def is_time(question: str) -> bool:
    return len(TIME_UNITS & set(re.findall(r"\w+", question))) == 2


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(ScriptedTarget, "_rule", student)
    forget_user_tasks()
    yield
    forget_user_tasks()


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_example_data_is_what_make_data_writes(tmp_path: Path) -> None:
    import runpy

    script = EXAMPLE / "make_data.py"
    copy = tmp_path / "make_data.py"
    copy.write_text(script.read_text())
    runpy.run_path(str(copy), run_name="__main__")
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), f"{name}: rerun make_data.py"
    train, test = rows(EXAMPLE / "train.jsonl"), rows(EXAMPLE / "test.jsonl")
    assert (len(train), len(test)) == (300, 60)
    assert not {r["question"] for r in train} & {r["question"] for r in test}


def test_the_example_runs_end_to_end_on_fakes(tmp_path: Path) -> None:
    config = load_config(EXAMPLE / "config.yaml", FAKES)
    assert "unit_conversions" in TASKS  # registered from include_path while the config was read
    assert config.include_path == [EXAMPLE]
    run_dir = tmp_path / "run"
    Pipeline(config, run_dir).run()

    summaries = load_summaries(run_dir)
    assert sorted(summaries) == [0, 1]
    it = summaries[1]
    assert it["select"]["selected"] == 16
    assert it["collect"]["wrong"] > 0

    collect = rows(run_dir / "iter_01" / "collect.jsonl")
    assert {r["task"] for r in collect} == {"unit_conversions"}
    # Exactly the time conversions are wrong: the file's scoring sees the misconception.
    assert [r["correct"] for r in collect] == [not is_time(r["question"]) for r in collect]
    assert 0 < it["collect"]["wrong"] < 16
    # The prompt is the task file's, and answers were read by its filters and metric.
    assert all("Convert the units." in r["prompt"][0]["content"] for r in collect)
    assert all(r["extracted"] is not None for r in collect)
    assert all(r["reason"].startswith("final answer") for r in collect)

    # The instructor saw the error through the generic template, filled with the task's words.
    instruct = rows(run_dir / "iter_01" / "instruct.jsonl")
    assert instruct and all(r["template"] == "le_task_unit_conversions" for r in instruct)
    for record in instruct:
        prompt = record["messages"][0]["content"]
        assert "unit conversions (metric lengths" in prompt and "2.5 kilograms" in prompt
        assert is_time(prompt.split("## The item", 1)[1].split("##", 1)[0])  # it was shown a time error
    # The samples were checked with the file's rules, re-solved, and some reached training.
    assert it["verify"]["kept"] > 0
    verified = rows(run_dir / "iter_01" / "verified.jsonl")
    assert verified and all(v["task"] == "unit_conversions" for v in verified)
    assert (run_dir / "iter_01" / "verify_instruct.jsonl").exists()

    # Scored before and after on the 60 test questions: right on all but the time ones.
    test = rows(EXAMPLE / "test.jsonl")
    expected = sum(not is_time(r["question"]) for r in test)
    assert 0 < expected < 60
    report = (run_dir / "report.md").read_text()
    assert f"| 0 | unit_conversions/test | {100 * expected / 60:.1f}% | {expected}/60 |" in report
    assert "include_path" in (run_dir / "config.yaml").read_text()


def test_a_resume_finds_the_task_from_the_saved_config(tmp_path: Path) -> None:
    config = load_config(EXAMPLE / "config.yaml", FAKES)
    run_dir = tmp_path / "run"
    Pipeline(config, run_dir).run()
    forget_user_tasks()  # a new process: only the saved config.yaml knows the task file
    again = load_config(run_dir / "config.yaml")
    assert "unit_conversions" in TASKS and again.include_path == [EXAMPLE]


@pytest.mark.parametrize("strategy", ["lec", "random", "original", "nearest"])
def test_every_kind_of_strategy_runs_on_the_file_task(strategy: str, tmp_path: Path) -> None:
    # lec: the contrast template; random: its own template; original/nearest: real rows,
    # taught through the file's reference_solution and training_target.
    config = load_config(EXAMPLE / "config.yaml", [*FAKES, f"strategy.name={strategy}"])
    Pipeline(config, tmp_path / "run").run()
    summary = load_summaries(tmp_path / "run")[1]
    assert summary["verify"]["kept"] > 0
    verified = rows(tmp_path / "run" / "iter_01" / "verified.jsonl")
    assert {v["strategy"] for v in verified} == {strategy}
