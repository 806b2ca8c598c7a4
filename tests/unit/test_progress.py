"""Progress a user can trust (issue 18, item 6): per item, a real rate, the iteration in the
label, a bar for training and a spinner for the instructor's start, and on resume a line
per stage saying what was found on disk and what is left."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

import lai.cli as cli
from lai.config import build_config
from lai.pipeline import Pipeline
from tests.pipeline.test_loop import fake_config


class Bar:
    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.advances: list[int] = []
        self.notes: list[str] = []
        self.closed = False

    def advance(self, n: int = 1) -> None:
        self.advances.append(n)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def close(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self) -> None:
        self.bars: list[Bar] = []

    def start(self, label: str, total: int | None) -> Bar:
        self.bars.append(Bar(label, total))
        return self.bars[-1]

    def labelled(self, label: str) -> list[Bar]:
        return [b for b in self.bars if b.label == label]


def test_answer_bars_move_per_item_and_name_their_iteration(data_dir: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    config = fake_config(data_dir, tmp_path / "requests.log", iterations=1)  # batch_size 4, 12 questions
    Pipeline(build_config(config), tmp_path / "run", recorder).run()
    labels = [b.label for b in recorder.bars]
    for label in ("iteration 0: evaluate gsm8k/test", "iteration 1: evaluate gsm8k/test", "iteration 1: collect",
                  "iteration 1: retest", "iteration 1: instruct", "iteration 1: verify"):  # fmt: skip
        assert label in labels, labels
    (collect,) = recorder.labelled("iteration 1: collect")
    assert collect.total == 12 and collect.advances == [0] + [1] * 12  # nothing on disk, then one per row
    (evaluate,) = recorder.labelled("iteration 1: evaluate gsm8k/test")
    assert evaluate.advances == [0] + [1] * 10 and evaluate.closed
    spinner = recorder.labelled("iteration 1: instruct: connecting to the instructor")
    assert spinner and spinner[0].total is None and spinner[0].closed


def test_a_resumed_run_says_what_it_found_and_what_is_left(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = fake_config(data_dir, tmp_path / "requests.log", iterations=1)
    run = tmp_path / "run"
    Pipeline(build_config(config), run).run()
    # As after a kill during collect: half its records, no marker, nothing after it.
    collect = run / "iter_01" / "collect.jsonl"
    collect.write_text("".join(collect.read_text().splitlines(keepends=True)[:5]))
    for name in ("collect", "instruct", "parse", "verify", "train", "evaluate", "retest"):
        (run / "iter_01" / f"{name}.done").unlink()
    instruct = run / "iter_01" / "instruct.jsonl"
    instruct.write_text("".join(instruct.read_text().splitlines(keepends=True)[:3]))
    recorder = Recorder()
    with caplog.at_level(logging.INFO, logger="lai"):
        Pipeline(build_config(config), run, recorder).run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume:")]
    assert lines[:2] == [
        "resume: iteration 0 evaluate: done on disk (gsm8k/test 0/10), skipped",
        "resume: iteration 1 select: done on disk (12 questions selected), skipped",
    ]
    assert "resume: iteration 1: collect: found 5 of 12 answers on disk, 7 to go" in lines
    assert any(line.startswith("resume: iteration 1 instruct: found 3 of ") and "to send" in line for line in lines)
    (collect_bar,) = recorder.labelled("iteration 1: collect")
    assert collect_bar.advances[0] == 5 and sum(collect_bar.advances) == 12


def test_training_moves_a_bar_per_step_with_the_loss() -> None:
    pytest.importorskip("transformers")
    from lai.train.sft import step_progress

    recorder = Recorder()
    callback = step_progress(recorder, "iteration 1: train")
    state, none = SimpleNamespace(max_steps=3), None
    callback.on_train_begin(none, state, none)
    for loss in (2.2071, 1.9, 1.7043):
        callback.on_step_end(none, state, none)
        callback.on_log(none, state, none, logs={"loss": loss})
    callback.on_train_end(none, state, none)
    (bar,) = recorder.bars
    assert (bar.label, bar.total, bar.advances, bar.closed) == ("iteration 1: train", 3, [0, 1, 1, 1], True)
    assert bar.notes[-1] == "(loss 1.704)"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_the_rate_counts_only_items_done_since_the_stage_started(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(cli, "time", clock)
    with Progress(*cli._columns(), console=Console(file=open("/dev/null", "w"))) as progress:  # noqa: SIM115
        stage = cli.RichProgress(progress).start("iteration 1: collect", 40)
        stage.advance(30)  # found on disk: not speed
        clock.now = 102.0
        stage.advance(1)
        clock.now = 104.0
        stage.advance(1)
        task: Any = progress.tasks[0]
        assert task.completed == 32 and task.fields["rate"] == pytest.approx(0.5)
        assert cli.RateColumn().render(task).plain == "2.0 s/it"
        assert cli.EtaColumn().render(task).plain == "0:00:16"  # 8 left at 2 s each
        stage.note("(loss 1.234)")
        assert task.description == "iteration 1: collect (loss 1.234)"


def test_a_closed_spinner_stops_spinning() -> None:
    with Progress(*cli._columns(), console=Console(file=open("/dev/null", "w"))) as progress:  # noqa: SIM115
        spinner = cli.RichProgress(progress).start("iteration 1: instruct: starting the local instructor server", None)
        spinner.close()
        (task,) = progress.tasks
        assert task.finished and task.total == 1
