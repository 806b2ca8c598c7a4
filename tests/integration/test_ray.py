"""Collect, evaluate and code verification fanned out over a local Ray instance.

A real Ray runtime (``ray.init`` with 2 CPUs, started by the test) runs the shard
workers; the target is the scripted fake so the records are comparable. The guarantees
checked are the local path's: the same records, resumable shard by shard, nothing
answered twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lai.config import ClusterConfig, build_config
from lai.pipeline import Pipeline
from lai.quality.verify import check_execution
from lai.records import GeneratedSample
from lai.tasks import get_task
from tests.pipeline.test_loop import fake_config, records

CLUSTER = {"backend": "ray", "workers": 2, "shard_size": 3, "local_cpus": 2, "cpus_per_worker": 1}

pytestmark = pytest.mark.slow  # starts a Ray cluster


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    # Imported here, not at import time: collecting this file (every run of the suite) needs no Ray.
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'lai[distributed]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def config(data_dir: Path, tmp_path: Path, **changes: Any) -> Any:
    cfg = fake_config(data_dir, tmp_path / "instructor.log", iterations=1)
    cfg["target"]["options"]["prompt_log"] = str(tmp_path / "prompts.log")
    cfg.update(changes)
    return build_config(cfg)


def test_a_ray_run_writes_the_same_records_as_a_local_run(data_dir: Path, tmp_path: Path) -> None:
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
    Pipeline(config(data_dir, tmp_path / "a"), tmp_path / "local").run()
    Pipeline(config(data_dir, tmp_path / "b", cluster=CLUSTER), tmp_path / "ray").run()
    local, remote = records(tmp_path / "local"), records(tmp_path / "ray")
    answered = ("iter_00/eval/gsm8k-test.jsonl", "iter_01/collect.jsonl", "iter_01/eval/gsm8k-test.jsonl", "iter_01/retest.jsonl")
    for name in answered:
        assert remote[name] == local[name], name
    assert remote == local  # and so everything downstream
    # The worker processes answered exactly one prompt per record (the same test questions
    # are asked at iterations 0 and 1, and retest asks collect's errors again).
    log = (tmp_path / "b/prompts.log").read_text().split()
    assert len(log) == sum(len(local[n]) for n in answered)
    # The manifest still records the model fingerprint (asked of a worker).
    manifest = json.loads((tmp_path / "ray/manifest.json").read_text())
    assert manifest["models"]["iter_00"]["fingerprint"].startswith("scripted-")


def test_a_ray_collect_resumes_after_the_records_on_disk(data_dir: Path, tmp_path: Path) -> None:
    cfg = config(data_dir, tmp_path, cluster=CLUSTER)
    pipeline = Pipeline(cfg, tmp_path / "run")
    pipeline.select(1)
    out = tmp_path / "run/iter_01/collect.jsonl"
    pipeline.collect(1, cfg.target.model)
    full = out.read_text().splitlines()
    # As if killed after 5 records: keep them (and a torn last line), answer again.
    out.write_text("\n".join(full[:5]) + "\n" + full[5][:20])
    (tmp_path / "prompts.log").unlink()
    pipeline.collect(1, cfg.target.model)
    pipeline.target.release()
    again = out.read_text().splitlines()
    assert sorted(again) == sorted(full)  # same records, none lost, none twice
    assert len((tmp_path / "prompts.log").read_text().split()) == len(full) - 5


def test_code_verification_shards_give_the_local_verdicts() -> None:
    from lai.ray_cluster import ray_scorer

    task = get_task("mbpp")

    def sample(i: int, body: str) -> GeneratedSample:
        return GeneratedSample(
            id=f"le:x#{i}", request_id="le:x", source_ids=["x"], task="mbpp",
            question=f'def f{i}(a, b):\n    """Add."""\n', solution=f"def f{i}(a, b):\n    {body}\n",
            answer=f"assert f{i}(1, 2) == 3", kept=True, strategy="le",
        )  # fmt: skip

    samples = [sample(i, "return a + b" if i % 2 else "return a - b") for i in range(7)]
    local = check_execution(samples, {"mbpp": task})
    remote = check_execution(samples, {"mbpp": task}, ray_scorer(ClusterConfig(**CLUSTER)))
    assert [(s.kept, s.drop_reason) for s in remote] == [(s.kept, s.drop_reason) for s in local]
    assert [s.kept for s in remote] == [bool(i % 2) for i in range(7)]



def test_ray_workers_know_the_drivers_task_files(data_dir: Path, tmp_path: Path) -> None:
    """A task from a task file (include_path) exists in the driver only; the workers are
    handed the driver's registrations (lai.tasks.task_setup) and score it the same way."""
    from lai.tasks.from_file import forget_user_tasks

    example = Path(__file__).resolve().parents[2] / "examples" / "unit_conversions"
    benchmarks = {"benchmarks": [{"task": "unit_conversions", "pool": "test", "limit": 6}]}
    try:
        found = {}
        for side, cluster in (("local", {}), ("ray", {"cluster": CLUSTER})):
            cfg = config(data_dir, tmp_path, include_path=[str(example)], evaluate=benchmarks, **cluster)
            pipeline = Pipeline(cfg, tmp_path / side)
            pipeline._stage(0, "evaluate", pipeline.evaluate, 0, cfg.target.model)
            pipeline.target.release()
            found[side] = records(tmp_path / side)
    finally:
        forget_user_tasks()
    assert found["ray"] == found["local"] and len(found["ray"]["iter_00/eval/unit_conversions-test.jsonl"]) == 6
