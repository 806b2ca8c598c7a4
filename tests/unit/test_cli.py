"""Bad input ends with one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.forked_cli import lai_forked

REPO = Path(__file__).resolve().parents[2]


def lai(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "lai.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def forked(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command as a forked child of this process (tests/helpers/forked_cli.py): its
    own streams and exit status, the real lai.cli.main, the imports shared. For the tests of
    what a run writes and says; the ones about the command itself starting use lai()."""
    return lai_forked(*args, cwd=Path.cwd(), env={"COLUMNS": "200"})


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    error_line = next(line for line in lines if line.startswith("error:"))
    for needle in needles:
        assert needle in error_line, error_line


def fake(tmp_path: Path, data_dir: Path, **changes: object) -> Path:
    config = {
        "name": "cli",
        "data_dir": str(data_dir),
        "target": {"backend": "scripted", "model": "m"},
        "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 4}]},
        "instructor": {"backend": "scripted"},
        "strategy": {"embedder": "hashing"},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [{"task": "gsm8k", "pool": "test", "limit": 3}]},
    }
    config.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_validate_good_and_bad(tmp_path: Path) -> None:
    assert lai("validate", str(REPO / "configs" / "demo.yaml")).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: -1\n  learing_rate: 1\n")
    assert_clean_error(lai("validate", str(bad)), "train.epochs", "train.learing_rate: unknown key")
    assert_clean_error(lai("validate", str(tmp_path / "none.yaml")), "config file not found")


def test_run_end_to_end_on_fakes_then_report(tmp_path: Path, data_dir: Path) -> None:
    result = forked("run", str(fake(tmp_path, data_dir)), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "report:" in result.stderr and (tmp_path / "run" / "report.md").exists()
    (tmp_path / "run" / "report.md").unlink()
    assert forked("report", str(tmp_path / "run")).returncode == 0
    assert (tmp_path / "run" / "report.md").exists()
    # Resuming with only the run directory reuses its config.
    assert forked("run", "--run-dir", str(tmp_path / "run")).returncode == 0
    assert_clean_error(forked("report", str(tmp_path)), "not a lai run directory")


def test_missing_data_file(tmp_path: Path, data_dir: Path) -> None:
    config = fake(tmp_path, data_dir, select={"pools": [{"task": "gsm8k", "n": 2, "path": str(tmp_path / "x.jsonl")}]})
    assert_clean_error(forked("run", str(config), "--run-dir", str(tmp_path / "run")), "not found", "x.jsonl")


def test_model_path_that_does_not_exist(tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("torch")
    config = fake(tmp_path, data_dir, target={"backend": "hf", "model": str(tmp_path / "no-model")})
    assert_clean_error(lai("run", str(config), "--run-dir", str(tmp_path / "run")), "model path does not exist")


def test_unreachable_instructor_keeps_what_was_written(tmp_path: Path, data_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    instructor = {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "max_retries": 0}
    config = fake(tmp_path, data_dir, instructor=instructor)
    result = forked("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(result, "unreachable", f"127.0.0.1:{port}")
    collected = (tmp_path / "run" / "iter_01" / "collect.jsonl").read_text().splitlines()
    assert len(collected) == 4 and (tmp_path / "run" / "iter_01" / "collect.done").exists()
    assert (tmp_path / "run" / "iter_00" / "evaluate.done").exists()


def test_dry_run_estimates_and_sends_nothing(tmp_path: Path, data_dir: Path) -> None:
    instructor = {"backend": "scripted", "model": "teacher", "max_tokens": 100, "prices": {"teacher": {"prompt": 2.0, "completion": 10.0}}}
    config = fake(tmp_path, data_dir, instructor=instructor, strategy={"name": "le", "budget": 8, "embedder": "hashing"})
    result = forked("run", str(config), "--run-dir", str(tmp_path / "run"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stderr and "Nothing was sent" in result.stderr
    wrong = sum(not json.loads(x)["correct"] for x in (tmp_path / "run/iter_01/collect.jsonl").read_text().splitlines())
    control = round(0.2 * wrong)  # strategy.control_fraction's default
    shown = wrong - control
    n = -(-8 // shown) + 1  # LE asks ceil(budget / errors) + 1 samples per error
    solves = shown * n * 3  # verify.resolve: 3 solves per sample, at most 512 tokens each
    assert f"{shown + solves} requests to teacher ({shown} to write samples, at most {solves} to re-solve" in result.stderr
    assert f"{control} errors held back" in result.stderr
    assert f"at most {shown * 100 + solves * 512:,} completion tokens" in result.stderr
    assert not (tmp_path / "run/iter_01/instruct.jsonl").exists()
    assert not (tmp_path / "run/iter_00").exists()  # no baseline evaluation in a dry run


def test_a_missing_argument_is_a_usage_error_not_an_internal_one() -> None:
    for command in ("report", "compare"):
        result = lai(command)
        assert result.returncode == 2, result.stderr
        assert "Missing argument" in result.stderr and "internal error" not in result.stderr
