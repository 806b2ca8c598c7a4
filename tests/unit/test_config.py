from __future__ import annotations

from pathlib import Path

import pytest

from lai.config import RunConfig, load_config, parse_overrides
from lai.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_says_how_to_run_it(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, RunConfig)
    head = path.read_text().splitlines()[:12]
    assert head[0].startswith("#"), "a shipped config opens with a comment saying what it is"
    assert any("lai run" in line or "make demo" in line for line in head), "and how to run it"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.learing_rate: unknown key"):
        load_config(write(tmp_path, "train:\n  learing_rate: 0.1\n"))


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(write(tmp_path, "train:\n  epochs: lots\n"))


def test_unknown_task_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'gsm9k'.*gsm8k"):
        load_config(write(tmp_path, "select:\n  pools:\n    - {task: gsm9k}\n"))


def test_unknown_pool_and_backend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no pool 'dev'"):
        load_config(write(tmp_path, "evaluate:\n  benchmarks:\n    - {task: gsm8k, pool: dev}\n"))
    with pytest.raises(ConfigError, match=r"unknown target backend 'vllm2'"):
        load_config(write(tmp_path, "target:\n  backend: vllm2\n"))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_config(write(tmp_path, "a: 1\nb: c: d\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_remote_instructor_needs_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_url is required"):
        load_config(write(tmp_path, "instructor:\n  backend: openai\n  local: {enabled: false}\n"))


def test_api_key_env_refuses_a_pasted_key(tmp_path: Path) -> None:
    pasted = "sk-" + "x" * 32  # what a pasted key looks like (built here: no key-like literal)
    text = f"instructor:\n  base_url: http://x/v1\n  api_key_env: {pasted}\n"
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        load_config(write(tmp_path, text))


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    assert parse_overrides(["train.epochs=2", "target.dtype=bfloat16", "evaluate.baseline=false"]) == {
        "train": {"epochs": 2},
        "target": {"dtype": "bfloat16"},
        "evaluate": {"baseline": False},
    }
    config = load_config(REPO / "configs" / "demo.yaml", ["train.epochs=2", "strategy.budget=5"])
    assert config.train.epochs == 2 and config.strategy.budget == 5
    with pytest.raises(ConfigError, match="bad --set"):
        parse_overrides(["train.epochs"])


def test_overrides_reach_list_entries_by_index() -> None:
    demo = REPO / "configs" / "demo.yaml"
    config = load_config(demo, ["select.pools.0.n=3", "evaluate.benchmarks.0.limit=7"])
    assert config.select.pools[0].n == 3 and config.evaluate.benchmarks[0].limit == 7
    assert config.select.pools[0].task == load_config(demo).select.pools[0].task  # the rest of the entry kept
    with pytest.raises(ConfigError, match=r"^select\.pools\.5: select\.pools has 1 entry \(indexes 0 to 0\)"):
        load_config(demo, ["select.pools.5.n=3"])
    with pytest.raises(ConfigError, match=r"^select\.pools\.first: select\.pools is a list, so its entries are numbered"):
        load_config(demo, ["select.pools.first.n=3"])


def test_extends_merges_the_parent_underneath(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\nseed: 3\nstrategy: {name: le, budget: 10, k: 3}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nstrategy: {name: lec}\n")
    config = load_config(tmp_path / "child.yaml", ["strategy.budget=12"])
    assert (config.name, config.seed) == ("child", 3)
    assert (config.strategy.name, config.strategy.budget, config.strategy.k) == ("lec", 12, 3)


def test_extends_loops_and_missing_parents_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="config file not found: .*nowhere.yaml"):
        load_config(tmp_path / "c.yaml")
