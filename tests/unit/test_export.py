"""``lai export``: a run's kept samples as a Hugging Face dataset with a provenance card.

One fake run (scripted target and instructor, noop trainer, hashing embedder; two
iterations) is built per module, with the noop trainer wrapped so the test knows exactly
which examples the pipeline trained on. Tests that change a run work on copies.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lai.config import build_config
from lai.errors import LaiError
from lai.export import MARKER, export_dataset
from lai.pipeline import Pipeline
from lai.store import load_summaries
from lai.train.base import TrainExample
from lai.train.noop import NoopTrainer
from tests.helpers.markdown import table_rows
from tests.pipeline.test_loop import fake_config
from tests.unit.test_cli import assert_clean_error, lai


@pytest.fixture(scope="module", autouse=True)
def _datasets_installed() -> None:
    """The export writes a Hugging Face dataset: without the train extra every test here skips,
    saying so. Checked when the tests run, not at import: a base install still collects."""
    pytest.importorskip("datasets")


REPO = Path(__file__).resolve().parents[2]
TEXT_COLUMNS = ("id", "task", "question", "solution", "answer", "strategy", "error_id", "row_id", "diagnosis",
                "instructor_model", "template", "template_hash")  # fmt: skip
LIST_COLUMNS = ("source_ids", "neighbour_ids")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, dict[int, list[TrainExample]]]:
    """A two-iteration fake run, and the examples its train stage got, by iteration."""
    base = tmp_path_factory.mktemp("export_run")
    trained: dict[int, list[TrainExample]] = {}
    original = NoopTrainer.train

    def recording(self: NoopTrainer, model: str, examples: list[TrainExample], out_dir: Path) -> dict[str, Any]:
        trained[int(out_dir.parent.name.removeprefix("iter_"))] = list(examples)
        return original(self, model, examples, out_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NoopTrainer, "train", recording)
        Pipeline(build_config(fake_config(data_dir, base / "requests.log")), base / "run").run()
    assert sorted(trained) == [1, 2]
    return base / "run", trained


@pytest.fixture(scope="module")
def exported(fake_run: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "kept"
    summary = export_dataset(fake_run[0], out)
    assert summary.out_dir == out and summary.card == out / "README.md" and not summary.replaced
    return out


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def verified(run_dir: Path) -> list[dict[str, Any]]:
    """Every sample of the run, iteration by iteration, in file order."""
    return [row for k in (1, 2) for row in jsonl(run_dir / f"iter_{k:02d}" / "verified.jsonl")]


def load(out: Path) -> Any:
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_from_disk(str(out))
    assert isinstance(loaded, datasets.DatasetDict) and list(loaded) == ["train"]
    return loaded["train"]


def front_matter(card: str) -> tuple[dict[str, Any], str]:
    assert card.startswith("---\n")
    head, _, body = card[4:].partition("\n---\n")
    return yaml.safe_load(head), body




def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def assert_one_line(error: pytest.ExceptionInfo[LaiError], *needles: str) -> None:
    text = str(error.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text


# ---- content --------------------------------------------------------------------------------


def test_rows_are_the_kept_samples_with_their_provenance(fake_run: tuple[Path, Any], exported: Path) -> None:
    samples = verified(fake_run[0])
    kept = [s for s in samples if s["kept"]]
    assert kept and len(kept) < len(samples)  # the run dropped some, so the filter is tested
    rows = load(exported)
    assert rows.num_rows == len(kept)
    assert "kept" not in rows.column_names and "drop_reason" not in rows.column_names
    for row, sample in zip(rows, kept, strict=True):
        for column in TEXT_COLUMNS + LIST_COLUMNS:
            assert row[column] == sample[column], column
        assert row["iteration"] == sample["iteration"]
        assert json.loads(row["checks"]) == sample["checks"] and sample["checks"]
    assert {r["iteration"] for r in rows} == {1, 2}
    assert {r["instructor_model"] for r in rows} == {"fake-teacher"}


def test_messages_are_what_the_pipeline_trained_on(fake_run: tuple[Path, Any], exported: Path) -> None:
    _, trained = fake_run
    rows = load(exported)
    for k, examples in trained.items():
        chats = [r["messages"] for r in rows if r["iteration"] == k]
        assert chats == [[*e.prompt, {"role": "assistant", "content": e.completion}] for e in examples]
    first = rows[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["question"] in first["messages"][0]["content"]
    assert first["messages"][1]["content"].endswith(f"The answer is {first['answer']}.")


def test_card_records_the_provenance(fake_run: tuple[Path, Any], exported: Path) -> None:
    run_dir = fake_run[0]
    meta, body = front_matter((exported / "README.md").read_text())
    assert meta["license"] == "unknown"
    assert meta["task_categories"] == ["text-generation"]
    assert {"synthetic", "lai", "llms-as-instructors"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["templates"]
    for name, digest in manifest["templates"].items():
        assert f"`{name}` | `{digest}`" in body
    for needle in ("`fake-teacher`", "**Strategy:** `le`", "budget 20", "`fake-model`",
                   manifest["models"]["iter_00"]["fingerprint"], manifest["config_sha256"],
                   f"**Seed:** {manifest['seed']}", f"lai {manifest['lai_version']}", "## How it was made",
                   "## Limitations", "scripted test fake"):  # fmt: skip
        assert needle in body, needle
    for package, version in manifest["packages"].items():
        assert table_rows(body, package) == [[package, version]]
    summaries = load_summaries(run_dir)
    rows = load(exported)
    for k in (1, 2):
        s = summaries[k]
        (row,) = [r for r in table_rows(body, str(k)) if len(r) == 11]
        assert row[1] == "verified.jsonl"
        assert row[2] == str(s["instruct"]["requests"])
        well_formed = s["parse"]["parsed"] - s["parse"]["drop_reasons"].get("format", 0)
        assert row[3:6] == [str(s["parse"]["parsed"]), str(well_formed), str(s["parse"]["kept"])]
        assert s["verify"]["checked"] == s["parse"]["kept"] and row[7] == str(s["verify"]["kept"])
        for reason, n in s["verify"]["drop_reasons"].items():
            assert f"{reason} {n}" in row[8]
        assert row[9] == str(s["train"]["examples"])
        assert row[10] == str(sum(r["iteration"] == k for r in rows)) == row[7]
        assert all(str(found["checked"]) == str(well_formed) for found in s["verify"]["contamination"].values())
        for bench, found in s["verify"]["contamination"].items():
            assert [str(k), bench, str(found["checked"]), str(found["contaminated"]), f"{100 * found['rate']:.1f}%"] in table_rows(body, str(k))
    for check in summaries[1]["verify"]["checks"]:
        assert check in body
    marker = json.loads((exported / MARKER).read_text())
    assert marker["run"]["name"] == "fake" and marker["rows"] == rows.num_rows


def test_include_dropped_exports_every_sample_with_its_verdict(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    summary = export_dataset(fake_run[0], tmp_path / "all", include_dropped=True)
    samples = verified(fake_run[0])
    rows = load(tmp_path / "all")
    assert rows.num_rows == summary.rows == len(samples)
    assert summary.kept == sum(s["kept"] for s in samples) and summary.dropped == rows.num_rows - summary.kept > 0
    assert [(r["id"], r["kept"], r["drop_reason"]) for r in rows] == [(s["id"], s["kept"], s["drop_reason"]) for s in samples]
    assert "includes dropped samples" in (tmp_path / "all" / "README.md").read_text()


def test_iterations_without_verified_jsonl_fall_back_to_generated(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    run_dir = copy_run(fake_run[0], tmp_path)
    (run_dir / "iter_02" / "verified.jsonl").unlink()
    summary = export_dataset(run_dir, tmp_path / "out")
    assert summary.sources == {1: "verified.jsonl", 2: "generated.jsonl"}
    rows = load(tmp_path / "out")
    generated = [s["id"] for s in jsonl(run_dir / "iter_02" / "generated.jsonl") if s["kept"]]
    assert [r["id"] for r in rows if r["iteration"] == 2] == generated
    assert "generated.jsonl and passed the parse stage's format checks only" in (tmp_path / "out" / "README.md").read_text()


# ---- the output folder ----------------------------------------------------------------------


def test_a_run_that_a_lai_process_is_writing_is_not_exported(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    """Its samples may not be verified yet: refused in one line naming the holder."""
    run_dir = copy_run(fake_run[0], tmp_path)
    code = "import sys, time; from lai import runlock; runlock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LaiError) as error:
            export_dataset(run_dir, tmp_path / "out")
        assert_one_line(error, str(run_dir), "in use by another lai process", f"pid {holder.pid}")
        assert not (tmp_path / "out").exists()
    finally:
        holder.kill()
        holder.wait()
    assert export_dataset(run_dir, tmp_path / "out").rows > 0  # free again


def test_reexport_of_the_same_run_replaces_the_folder(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_dataset(fake_run[0], out)
    (out / "stale.txt").write_text("from before")
    summary = export_dataset(fake_run[0], out, include_dropped=True)
    assert summary.replaced
    assert not (out / "stale.txt").exists()
    assert load(out).num_rows == len(verified(fake_run[0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folders left


def test_a_foreign_or_other_runs_folder_is_refused(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LaiError) as error:
        export_dataset(fake_run[0], foreign)
    assert_one_line(error, "exists and is not empty")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # An export of a different run is not overwritten either.
    other = copy_run(fake_run[0], tmp_path)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["created"] = "2000-01-01T00:00:00+00:00"
    (other / "manifest.json").write_text(json.dumps(manifest))
    export_dataset(other, tmp_path / "out")
    with pytest.raises(LaiError) as error:
        export_dataset(fake_run[0], tmp_path / "out")
    assert_one_line(error, "export of another run")
    # An empty folder is fine.
    (tmp_path / "empty").mkdir()
    assert export_dataset(fake_run[0], tmp_path / "empty").rows > 0


def test_not_a_run_dir_and_empty_runs_are_one_line_errors(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    for bad in (tmp_path / "missing", tmp_path):
        with pytest.raises(LaiError) as error:
            export_dataset(bad, tmp_path / "out")
        assert_one_line(error, "not a lai run directory")
    run_dir = copy_run(fake_run[0], tmp_path)
    for k in (1, 2):
        path = run_dir / f"iter_{k:02d}" / "verified.jsonl"
        path.write_text("".join(json.dumps({**s, "kept": False, "drop_reason": s["drop_reason"] or "duplicate"}) + "\n" for s in jsonl(path)))
    with pytest.raises(LaiError) as error:
        export_dataset(run_dir, tmp_path / "out")
    assert_one_line(error, "no kept samples", "--include-dropped")
    assert not (tmp_path / "out").exists()
    assert export_dataset(run_dir, tmp_path / "out", include_dropped=True).kept == 0
    for k in (1, 2):
        shutil.rmtree(run_dir / f"iter_{k:02d}")
    with pytest.raises(LaiError) as error:
        export_dataset(run_dir, tmp_path / "out2")
    assert_one_line(error, "no generated samples")


# ---- command line ---------------------------------------------------------------------------


def test_cli_exports_and_fails_cleanly(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    run_dir = fake_run[0]
    result = lai("export", str(run_dir), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    kept = sum(s["kept"] for s in verified(run_dir))
    assert f"exported {kept} kept samples from iteration(s) 1, 2 of run fake" in result.stderr
    assert load(tmp_path / "out").num_rows == kept
    assert_clean_error(lai("export", str(tmp_path / "missing"), str(tmp_path / "x")), "not a lai run directory")
    assert_clean_error(lai("export", str(run_dir), str(run_dir)), "exists and is not empty")


def test_push_without_a_token_or_offline_is_refused_before_any_work(
    fake_run: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(LaiError) as error:
        export_dataset(fake_run[0], tmp_path / "out", push_to_hub="someone/samples")
    assert_one_line(error, "HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(LaiError) as error:
        export_dataset(fake_run[0], tmp_path / "out", push_to_hub="someone/samples")
    assert_one_line(error, "HF_HUB_OFFLINE")
    with pytest.raises(LaiError) as error:
        export_dataset(fake_run[0], tmp_path / "out", push_to_hub="not a repo!")
    assert_one_line(error, "not a valid repo id")
    assert not (tmp_path / "out").exists()


def test_push_to_an_unreachable_hub_is_a_clean_error_and_quick(fake_run: tuple[Path, Any], tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_TOKEN": "hf_not_a_real_token", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_ETAG_TIMEOUT": "3", "HF_HUB_DOWNLOAD_TIMEOUT": "3",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "lai.cli", "export", str(fake_run[0]), str(tmp_path / "out"), "--push-to-hub", "someone/samples"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert_clean_error(result, "pushing to the Hugging Face Hub repo someone/samples failed", "local export")
    assert "hf_not_a_real_token" not in result.stderr + result.stdout
    assert load(tmp_path / "out").num_rows > 0  # the local export was finished first
    for written in ("README.md", MARKER):  # the token is passed on, never written
        assert "hf_not_a_real_token" not in (tmp_path / "out" / written).read_text()


def test_export_without_the_datasets_package_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from lai.errors import LaiError
    from lai.export import export_dataset

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(LaiError, match=r"needs the datasets package.*lai\[train\]"):
        export_dataset(tmp_path / "run", tmp_path / "out")
    assert not (tmp_path / "out").exists()
