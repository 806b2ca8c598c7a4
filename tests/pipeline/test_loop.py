"""The whole loop on fakes: two iterations, resume, and kill -9 at random moments."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from lai.config import build_config
from lai.pipeline import Pipeline
from lai.records import Attempt
from lai.store import load_summaries
from lai.targets.scripted import ScriptedTarget

REPO = Path(__file__).resolve().parents[2]
RECORD_FILES = (
    "selection.jsonl", "collect.jsonl", "instruct.jsonl", "generated.jsonl", "verify_instruct.jsonl",
    "verified.jsonl", "eval/gsm8k-test.jsonl", "retest.jsonl",
)  # fmt: skip
VOLATILE = {"seconds"}  # wall-clock fields differ between runs by nature


def fake_config(data_dir: Path, request_log: Path, delay: float = 0.0, **extra: Any) -> dict[str, Any]:
    config = {
        "name": "fake",
        "seed": 7,
        "iterations": 2,
        "data_dir": str(data_dir),
        "target": {"backend": "scripted", "model": "fake-model", "batch_size": 4, "options": {"delay_s": delay}},
        "select": {"pools": [{"task": "gsm8k", "pool": "train", "n": 12}]},
        "instructor": {
            "backend": "scripted",
            "model": "fake-teacher",
            "concurrency": 2,
            "options": {"delay_s": delay, "request_log": str(request_log), "garbage_every": 5},
        },
        "strategy": {"name": "le", "budget": 20, "embedder": "hashing"},
        "train": {"backend": "noop"},
        "evaluate": {"benchmarks": [{"task": "gsm8k", "pool": "test", "limit": 10}]},
    }
    config.update(extra)
    return config


def records(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    found = {}
    for path in sorted(run_dir.glob("iter_*/**/*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        found[str(path.relative_to(run_dir))] = sorted(
            ({k: v for k, v in row.items() if k not in VOLATILE} for row in rows), key=lambda r: r["id"]
        )
    return found


def test_two_iterations_on_fakes(shared_data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    config = build_config(fake_config(shared_data_dir, log))
    report = Pipeline(config, tmp_path / "run").run()
    summaries = load_summaries(tmp_path / "run")
    assert sorted(summaries) == [0, 1, 2]
    for k in (1, 2):
        s = summaries[k]
        assert s["select"]["selected"] == 12
        # A fifth of the errors is held back as the fix rate's control group.
        assert s["instruct"]["control_errors"] == round(0.2 * s["collect"]["wrong"])
        assert s["collect"]["n"] == 12 and s["collect"]["wrong"] == s["instruct"]["requests"] + s["instruct"]["control_errors"]
        assert s["parse"]["kept"] > 0 and s["parse"]["drop_reasons"].get("unparseable reply", 0) > 0
        assert s["verify"]["checked"] == s["parse"]["kept"] and s["verify"]["kept"] > 0
        assert s["train"]["examples"] == s["verify"]["kept"]
        retest = s["retest"]
        assert retest["targeted"]["n"] + retest["control"]["n"] + retest["other"]["n"] == s["collect"]["wrong"]
        assert retest["control"]["n"] == s["instruct"]["control_errors"]
        assert s["evaluate"]["scores"]["gsm8k/test"]["n"] == 10
    # Iterations draw disjoint questions; none is ever sent to the instructor twice.
    sel = [{json.loads(x)["id"] for x in (tmp_path / f"run/iter_0{k}/selection.jsonl").read_text().splitlines()} for k in (1, 2)]
    assert not sel[0] & sel[1]
    assert max(Counter(log.read_text().split()).values()) == 1
    text = report.read_text()
    assert "| 2 | gsm8k/test |" in text and "errors found" in text and "unparseable reply" in text
    # A rerun of a finished run does nothing and changes nothing.
    before = records(tmp_path / "run")
    Pipeline(config, tmp_path / "run").run()
    assert records(tmp_path / "run") == before
    assert max(Counter(log.read_text().split()).values()) == 1


def test_instructor_sees_the_targets_error(data_dir: Path, tmp_path: Path) -> None:
    config = build_config(fake_config(data_dir, tmp_path / "log", iterations=1))
    pipeline = Pipeline(config, tmp_path / "run")
    pipeline.run()
    collect = [json.loads(x) for x in (tmp_path / "run/iter_01/collect.jsonl").read_text().splitlines()]
    wrong = [a for a in collect if not a["correct"]]
    instruct = [json.loads(x) for x in (tmp_path / "run/iter_01/instruct.jsonl").read_text().splitlines()]
    by_source = {r["source_ids"][0]: r for r in instruct}
    control = pipeline.control_ids([Attempt(**a) for a in collect])
    assert control and control < {a["id"] for a in wrong}
    for attempt in wrong:
        if attempt["id"] in control:  # held back: never shown to the instructor
            assert attempt["id"] not in by_source
            continue
        content = by_source[attempt["id"]]["messages"][0]["content"]
        assert attempt["question"] in content and attempt["response"] in content


def test_a_different_config_is_refused_in_the_same_run_dir(data_dir: Path, tmp_path: Path) -> None:
    from lai.errors import ConfigError

    Pipeline(build_config(fake_config(data_dir, tmp_path / "log", iterations=1)), tmp_path / "run").run()
    changed = build_config(fake_config(data_dir, tmp_path / "log", iterations=1, seed=8))
    with pytest.raises(ConfigError, match="differs in: seed"):
        Pipeline(changed, tmp_path / "run")
    # Asking for more iterations extends the run instead.
    Pipeline(build_config(fake_config(data_dir, tmp_path / "log", iterations=2)), tmp_path / "run").run()
    assert (tmp_path / "run/iter_02/evaluate.done").exists()


def test_scripted_target_history_and_queue() -> None:
    target = ScriptedTarget("m")
    target.enqueue(["The answer is 3."])
    replies = target.generate([[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]], 10)
    assert replies[0] == "The answer is 3." and "The answer is" in replies[1]
    assert [p[0]["content"] for p in target.history] == ["q1", "q2"]


def run_cli(config_path: Path, run_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "lai.cli", "run", str(config_path), "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip


def sent_counts(log: Path) -> Counter[str]:
    return Counter(log.read_text().split()) if log.exists() else Counter()


def written_ids(run_dir: Path) -> set[str]:
    ids: set[str] = set()
    for path in [*run_dir.glob("iter_*/instruct.jsonl"), *run_dir.glob("iter_*/verify_instruct.jsonl")]:
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a torn last line is no record
                ids.add(json.loads(line)["id"])
    return ids


@pytest.mark.slow  # about 20 s of runs killed and resumed
def test_kill_9_at_random_moments_then_resume_gives_the_same_records(data_dir: Path, tmp_path: Path) -> None:
    # Reference: one uninterrupted run.
    ref_config = tmp_path / "ref.yaml"
    ref_config.write_text(yaml.safe_dump(fake_config(data_dir, tmp_path / "ref.log")))
    reference = run_cli(ref_config, tmp_path / "ref")
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-2000:]

    # The same run, killed with SIGKILL several times at random moments, then finished.
    log = tmp_path / "killed.log"
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(yaml.safe_dump(fake_config(data_dir, log, delay=0.1)))
    run_dir = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    for _ in range(6):
        before_ids = written_ids(run_dir)
        before_counts = sent_counts(log)
        process = run_cli(config_path, run_dir)
        time.sleep(rng.uniform(1.0, 3.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
        # No request whose record was already written was sent again by this attempt.
        after_counts = sent_counts(log)
        assert all(after_counts[i] == before_counts[i] for i in before_ids)
        if (run_dir / "report.md").exists():
            break
    assert kills >= 2, "the test should interrupt the run at least twice"
    final = run_cli(config_path, run_dir)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()[-2000:]

    assert records(run_dir) == records(tmp_path / "ref")  # none lost, none duplicated, same content
    for rows in records(run_dir).values():
        assert len({r["id"] for r in rows}) == len(rows)
    # Every request was answered exactly once in the record; only requests in flight at a
    # kill (at most `concurrency` of them) are sent again.
    counts = sent_counts(log)
    assert set(counts) == written_ids(run_dir)
    assert sum(counts.values()) - len(counts) <= kills * fake_config(data_dir, log)["instructor"]["concurrency"]
    summaries = load_summaries(run_dir)
    assert summaries.keys() == load_summaries(tmp_path / "ref").keys()
    # Stage times count every attempt: the killed ones (up to their last heartbeat) too.
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    for entry in stages.values():
        assert entry["status"] == "done" and "running" not in entry
        assert entry["attempts"] == len(entry["history"])
        assert entry["seconds"] == pytest.approx(sum(a["seconds"] for a in entry["history"]), abs=0.05)


def test_a_train_slice_benchmark_is_never_selected(shared_data_dir: Path, tmp_path: Path) -> None:
    config = build_config(
        fake_config(
            shared_data_dir, tmp_path / "log", iterations=1,
            select={"pools": [{"task": "gsm8k", "pool": "train", "n": 8000}]},
            evaluate={"benchmarks": [{"task": "gsm8k", "pool": "train", "limit": 40}]},
        )
    )  # fmt: skip
    pipeline = Pipeline(config, tmp_path / "run")
    pipeline.select(1)
    selected = {json.loads(x)["id"] for x in (tmp_path / "run/iter_01/selection.jsonl").read_text().splitlines()}
    held_out = {f"gsm8k/train/{i}" for i in range(40)}
    assert len(selected) == 7473 - 40 and not selected & held_out


def test_several_tasks_flow_through_the_loop(data_dir: Path, tmp_path: Path) -> None:
    config = build_config(
        fake_config(
            data_dir, tmp_path / "log", iterations=1,
            select={"pools": [{"task": "gsm8k", "pool": "train", "n": 4}, {"task": "mbpp", "pool": "train", "n": 3}]},
            evaluate={"benchmarks": [
                {"task": "humaneval", "pool": "test", "limit": 2},
                {"task": "gsm8k", "pool": "test", "limit": 2, "protocol": "lm-eval"},
            ]},
        )
    )  # fmt: skip
    Pipeline(config, tmp_path / "run").run()
    summary = load_summaries(tmp_path / "run")[1]
    assert summary["collect"]["n"] == 7
    assert set(summary["evaluate"]["scores"]) == {"humaneval/test", "gsm8k/test@lm-eval"}
    instruct = [json.loads(x) for x in (tmp_path / "run/iter_01/instruct.jsonl").read_text().splitlines()]
    code_requests = [r for r in instruct if r["task"] == "mbpp"]
    assert code_requests and "The tests it had to pass" in code_requests[0]["messages"][0]["content"]
    generated = [json.loads(x) for x in (tmp_path / "run/iter_01/generated.jsonl").read_text().splitlines()]
    # The scripted instructor writes arithmetic, not code: every mbpp sample fails the format check.
    assert all(not g["kept"] for g in generated if g["task"] == "mbpp")
    humaneval = [json.loads(x) for x in (tmp_path / "run/iter_00/eval/humaneval-test.jsonl").read_text().splitlines()]
    assert all(not r["correct"] and r["reason"].startswith("no code block") for r in humaneval)


def test_lec_shows_correct_neighbours_beside_each_error(data_dir: Path, tmp_path: Path) -> None:
    # Questions whose answers are 0 or 1, so the fake target (answers 0 or 1) is often right.
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(
        json.dumps({"question": f"Tom has {i} apples and gives {'all' if i % 2 else 'all but one'} away. How many are left?",
                    "answer": f"#### {0 if i % 2 else 1}"}) + "\n"
        for i in range(2, 42)
    ))  # fmt: skip
    config = build_config(
        fake_config(
            data_dir, tmp_path / "log", iterations=1,
            target={"backend": "scripted", "model": "fake-model", "options": {"modulus": 2}},
            select={"pools": [{"task": "gsm8k", "pool": "train", "n": 40, "path": str(pool)}]},
            strategy={"name": "lec", "budget": 20, "k": 2, "embedder": "hashing"},
        )
    )  # fmt: skip
    Pipeline(config, tmp_path / "run").run()
    collect = {a["id"]: a for a in map(json.loads, (tmp_path / "run/iter_01/collect.jsonl").read_text().splitlines())}
    instruct = [json.loads(x) for x in (tmp_path / "run/iter_01/instruct.jsonl").read_text().splitlines()]
    assert instruct and all(r["id"].startswith("lec:") for r in instruct)
    for record in instruct:
        error, *neighbours = record["source_ids"]
        assert not collect[error]["correct"]
        assert len(neighbours) == 2 and all(collect[n]["correct"] for n in neighbours)
        content = record["messages"][0]["content"]
        assert all(collect[n]["question"] in content for n in [error, *neighbours])


def test_a_run_saved_before_new_config_keys_still_resumes(data_dir: Path, tmp_path: Path) -> None:
    config = build_config(fake_config(data_dir, tmp_path / "log", iterations=1))
    Pipeline(config, tmp_path / "run").run()
    saved = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    del saved["verify"], saved["cluster"], saved["strategy"]["control_fraction"]  # as an older lai wrote it
    (tmp_path / "run/config.yaml").write_text(yaml.safe_dump(saved))
    Pipeline(build_config(fake_config(data_dir, tmp_path / "log", iterations=2)), tmp_path / "run").run()
    assert (tmp_path / "run/iter_02/evaluate.done").exists()
