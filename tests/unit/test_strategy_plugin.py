"""A strategy is one class plus one registry line: registered from this test module alone
(no edit to lai's files), a toy strategy is validated by the config, built by the
pipeline with the options it declares, run through the loop on fakes, and named,
described and classed (real rows, no instructor) by the verify stage, report.md and the
dataset card, all through what the class declares.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from lai.config import StrategyConfig, build_config
from lai.errors import ConfigError
from lai.records import Attempt, GeneratedSample, Sample
from lai.report.vocabulary import strategy_label, strategy_words, trains_on_real_rows
from lai.store import read_records
from lai.strategies import STRATEGIES, Strategy, strategy_class, uses_instructor
from lai.strategies.rows import row_sample, teachable_rows
from lai.tasks.base import Task
from tests.helpers.golden_run import config_for


class FirstRows(Strategy):
    """Trains on the first ``k`` teachable rows of each task: a toy real-row baseline."""

    name = "toy"
    uses_instructor = False
    description = "the first rows of each task, a toy registered by a test"
    options = ("k",)

    def __init__(self, budget: int, seed: int = 0, iteration: int = 1, k: int = 2, **options: Any) -> None:
        super().__init__(budget, seed, iteration, **options)
        self.k = k

    @classmethod
    def label(cls, settings: Mapping[str, Any]) -> str:
        return f"toy (k={settings.get('k')})"

    def direct_samples(
        self, attempts: list[Attempt], tasks: dict[str, Task], candidates: list[Sample]
    ) -> list[GeneratedSample]:
        rows = teachable_rows(candidates, tasks)
        picked = [row for task in sorted(rows) for row in rows[task][: self.k]][: self.budget]
        return [row_sample(self.name, row, self.iteration) for row in picked]


@pytest.fixture
def toy() -> Iterator[None]:
    STRATEGIES.register("toy", FirstRows)  # the one line a new strategy adds
    try:
        yield
    finally:
        STRATEGIES.unregister("toy")  # other tests must not see it


def toy_config(tmp_path: Path) -> dict[str, Any]:
    config = config_for("original", tmp_path, tmp_path / "requests.log")
    config["name"] = "toy-run"
    config["strategy"] = {"name": "toy", "budget": 12, "k": 3}
    return config


def test_an_unregistered_strategy_is_refused_by_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy 'toy'"):
        build_config(toy_config(tmp_path))


def test_every_registered_strategy_declares_options_the_config_has() -> None:
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        assert cls.name == name and cls.description, name
        assert set(cls.options) <= set(StrategyConfig.model_fields) - {"name", "budget"}, name


def test_a_name_no_strategy_has_still_renders() -> None:
    """A run made by another lai version: described by its name, as an instructor strategy."""
    assert strategy_class("gone") is Strategy and uses_instructor("gone")
    assert strategy_label({"name": "gone", "k": 2}) == "gone"
    assert strategy_words({"name": "gone"}) == "gone"


def test_a_strategy_registered_by_a_test_runs_and_is_reported(toy: None, tmp_path: Path) -> None:
    from lai.export import export_dataset
    from lai.pipeline import Pipeline
    from lai.quality.verify import needs_resolve

    config = build_config(toy_config(tmp_path))  # validation finds the name in the registry
    assert config.strategy.name == "toy"
    settings = {"name": "toy", "k": 3}
    assert not uses_instructor("toy") and trains_on_real_rows(settings)
    assert strategy_label(settings) == "toy (k=3)"
    assert strategy_words(settings) == FirstRows.description

    run_dir = tmp_path / "run"
    pipeline = Pipeline(config, run_dir)
    built = pipeline.strategy(1)
    assert isinstance(built, FirstRows) and built.k == 3  # the option it declares, from the config
    pipeline.run()

    samples = read_records(run_dir / "iter_01" / "verified.jsonl", GeneratedSample)
    assert samples and all(s.strategy == "toy" and s.row_id for s in samples)
    assert not any(needs_resolve(s, {}) for s in samples)  # a real row is not re-solved
    assert not (run_dir / "iter_01" / "instruct.jsonl").exists()  # no instructor was asked

    report = (run_dir / "report.md").read_text()
    assert "This run is a **baseline**" in report
    assert f"strategy `toy` ({FirstRows.description})" in report
    assert "**Instructor:** not used (strategy `toy` trains on real rows)" in report
    assert "**Strategy:** `toy (k=3)`" in report
    assert "What the strategy picked" in report and "A real training row the strategy picked" in report

    pytest.importorskip("datasets")  # the export writes a Hugging Face dataset (the train extra)
    export_dataset(run_dir, tmp_path / "export")
    card = (tmp_path / "export" / "README.md").read_text()
    assert f"Strategy `toy` ({FirstRows.description}) then picked real training rows" in card
    assert "none (strategy `toy` trains on real training rows, no instructor)" in card
    assert "`toy (k=3)`" in card
