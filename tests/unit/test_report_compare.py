"""report.md's new sections, ``lai compare``, and the Wilson interval, on small fake runs.

Three runs on the fakes (scripted target and instructor, noop trainer, hashing embedder)
with different strategies: ``le`` (two iterations), ``lec`` and ``original`` (one each,
``original`` with a second benchmark). They are built once per module (~2 s); tests that
change files work on copies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lai.config import build_config
from lai.errors import LaiError
from lai.pipeline import Pipeline
from lai.report.compare import compare_runs, comparison_table, render_markdown
from lai.report.markdown import render_report
from lai.report.stats import format_interval, wilson_interval
from lai.report.vocabulary import strategy_label
from lai.store import load_summaries
from tests.helpers.markdown import table_rows
from tests.pipeline.test_loop import fake_config

REPO = Path(__file__).resolve().parents[2]
NEW_FILES = ("verify.done", "retest.done", "verified.jsonl", "diagnoses.json", "verify_instruct.jsonl", "retest.jsonl")


# ---- Wilson interval ----------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    # Reference values from the closed form with z = 1.959964:
    #   0 of n:  [0, z^2 / (n + z^2)]            -> 0 of 10: [0, 3.8415 / 13.8415] = [0, 0.27753]
    #   n of n:  [n / (n + z^2), 1]              -> 10 of 10: [0.72247, 1]
    #   5 of 10: 0.5 +- z / (1 + z^2/10) * sqrt(0.025 + z^2/400) = 0.5 +- 0.26341 -> [0.23659, 0.76341]
    #   3 of 20: [0.05237, 0.36042] (also in published Wilson tables as 5.2% - 36.0%)
    expected = {(0, 10): (0.0, 0.27753), (10, 10): (0.72247, 1.0), (5, 10): (0.23659, 0.76341), (3, 20): (0.05237, 0.36042)}
    for (x, n), (low, high) in expected.items():
        got = wilson_interval(x, n)
        assert got is not None
        assert got == pytest.approx((low, high), abs=1e-5), (x, n)
    assert wilson_interval(0, 0) is None
    assert format_interval(5, 10) == "24-76%" and format_interval(0, 0) == "-"
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_strategy_labels_name_the_settings_that_matter() -> None:
    assert strategy_label({"name": "le", "k": 2}) == "le"
    assert strategy_label({"name": "lec", "k": 3}) == "lec (k=3)"
    assert strategy_label({"name": "mix", "k": 2, "mix": {"schedule": "alternate"}}) == "mix (alternate, k=2)"
    assert strategy_label({"name": "mix", "k": 2, "mix": {"schedule": "ratio", "lec_fraction": 0.25}}) == "mix (ratio, 25% lec, k=2)"
    assert strategy_label({"name": "original", "k": 2}) == "original"
    assert strategy_label(None) == "le"


# ---- fake runs ----------------------------------------------------------------------------


def set_scores(run_dir: Path, k: int, scores: dict[str, tuple[int, int]]) -> None:
    """Rewrite iteration k's eval.json and evaluate.done with (correct, n) per benchmark."""
    data = {
        bench: {"n": n, "correct": correct, "score": round(correct / n, 4)} for bench, (correct, n) in scores.items()
    }
    for name in ("eval.json", "evaluate.done"):
        path = run_dir / f"iter_{k:02d}" / name
        payload = json.loads(path.read_text())
        payload["scores"] = data
        path.write_text(json.dumps(payload))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    return make_runs(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> dict[str, Path]:
    """The same runs on the real GSM8K rows: the counts some tests check depend on them."""
    return make_runs(tmp_path_factory, shared_data_dir)


def make_runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    two_benchmarks = {
        "benchmarks": [
            {"task": "gsm8k", "pool": "test", "limit": 10},
            {"task": "gsm8k", "pool": "test", "limit": 5, "protocol": "lm-eval"},
        ]
    }
    specs = {
        "le": ("le", 2, {}),
        "lec": ("lec", 1, {}),
        "orig": ("original", 1, {"evaluate": two_benchmarks}),
    }
    out = {}
    for name, (strategy, iterations, extra) in specs.items():
        config = fake_config(
            data_dir, base / f"{name}.log", name=name, iterations=iterations,
            strategy={"name": strategy, "budget": 20, "embedder": "hashing"}, **extra,
        )  # fmt: skip
        Pipeline(build_config(config), base / name).run()
        out[name] = base / name
    # The scripted target gets every GSM8K question wrong; give the le run a real curve.
    for k, correct in ((0, 1), (1, 2), (2, 4)):
        set_scores(out["le"], k, {"gsm8k/test": (correct, 10)})
    return out


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))




def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


# ---- report.md ----------------------------------------------------------------------------


def test_funnel_runs_from_errors_to_training_with_both_stages_drop_reasons(runs: dict[str, Path]) -> None:
    text = render_report(runs["le"])
    funnel = section(text, "From errors to training data")
    header = next(line for line in funnel.splitlines() if line.startswith("| iteration"))
    for column in ("errors found", "held back (control)", "requests", "samples parsed", "well-formed",
                   "kept after parse", "kept after verify", "trained on", "dropped at parse", "dropped at verify"):  # fmt: skip
        assert column in header
    assert "passed format" not in text  # it meant two different counts (issue 18)
    summaries = load_summaries(runs["le"])
    for k in (1, 2):
        s = summaries[k]
        (row,) = [r for r in table_rows(funnel, str(k)) if len(r) == 11]
        assert row[1] == f"{s['collect']['wrong']} of {s['collect']['n']}"
        assert row[2] == str(s["instruct"]["control_errors"])
        assert row[3] == str(s["instruct"]["requests"])
        well_formed = s["parse"]["parsed"] - s["parse"]["drop_reasons"].get("format", 0)
        assert row[4:8] == [str(s["parse"]["parsed"]), str(well_formed), str(s["parse"]["kept"]), str(s["verify"]["kept"])]
        assert row[8].startswith(str(s["train"]["examples"]))
        for reason, n in s["parse"]["drop_reasons"].items():
            assert f"{reason} {n}" in row[9]
        for reason, n in s["verify"]["drop_reasons"].items():
            assert f"{reason} {n}" in row[10]
        # The contamination table counts the same well-formed samples, under the same name.
        contamination = table_rows(section(text, "Checks"), str(k))
        assert any(r[1] == "gsm8k/test" and r[2] == str(well_formed) for r in contamination)
    assert "well-formed samples checked" in section(text, "Checks")
    # Every term is defined once, in its own section.
    terms = section(text, "Terms")
    for term in ("errors found", "held back (control)", "samples parsed", "well-formed", "kept after parse", "kept after verify", "trained on"):
        assert f"- **{term}**:" in terms
    # The fakes drop unparseable replies at parse and duplicates at verify.
    assert "unparseable reply" in funnel and "duplicate" in funnel


def test_checks_section_shows_checks_contamination_and_resolve_requests(runs: dict[str, Path]) -> None:
    checks = section(render_report(runs["orig"]), "Checks")
    verify = load_summaries(runs["orig"])[1]["verify"]
    (row,) = table_rows(checks, "1")[:1]
    assert row[1] == ", ".join(verify["checks"]) and row[-1] == str(verify["resolve_requests"])
    contamination = [r for r in table_rows(checks, "1") if len(r) == 5]
    assert {r[1] for r in contamination} == {"gsm8k/test", "gsm8k/test@lm-eval"}
    for r in contamination:
        found = verify["contamination"][r[1]]
        assert r[2:] == [str(found["checked"]), str(found["contaminated"]), f"{100 * found['rate']:.1f}%"]


def test_fix_rate_section_shows_groups_with_intervals_and_how_to_read_them(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["le"], tmp_path)
    retest = run / "iter_02" / "retest.done"
    data = json.loads(retest.read_text())
    data["targeted"] = {"n": 20, "fixed": 15, "rate": 0.75}
    data["control"] = {"n": 20, "fixed": 3, "rate": 0.15}
    retest.write_text(json.dumps(data))
    fix = section(render_report(run), "Fix rate")
    assert "control" in fix and "what targeting added" in fix and "95% interval" in fix
    assert ["2", "targeted", "20", "15", "75.0%", "53-89%"] in table_rows(fix, "2")
    assert ["2", "control", "20", "3", "15.0%", "5-36%"] in table_rows(fix, "2")
    first = json.loads((run / "iter_01" / "retest.done").read_text())
    other = first["other"]
    assert ["1", "other", str(other["n"]), str(other["fixed"]), "0.0%", format_interval(other["fixed"], other["n"])] in table_rows(fix, "1")
    assert "Iteration 2: targeted 15/20 fixed vs control 3/20, a difference of +60.0 points; the intervals do not overlap" in fix
    assert "Iteration 1:" in fix and "may be chance" in fix


def test_errors_by_diagnosis_lists_groups_and_an_example(runs: dict[str, Path]) -> None:
    text = section(render_report(runs["le"]), "Errors by diagnosis")
    data = json.loads((runs["le"] / "iter_01" / "diagnoses.json").read_text())
    top = data["groups"][0]
    assert top["label"] != "" and [top["label"], str(top["n"]), str(top["fixed"]), str(top["kept_samples"])] in table_rows(
        text, top["label"]
    )
    error = next(e for e in top["errors"] if any(s["kept"] for s in e["samples"]))
    kept = next(s for s in error["samples"] if s["kept"])
    example = text[text.index("### Iteration 1") : text.index("### Iteration 2")]
    assert f"`{error['id']}`" in example and error["question"][:60] in example
    assert f"reference: {error['reference']}" in example and "The answer is" in example
    assert kept["question"] in example
    # A real-row baseline has no diagnoses: the section is left out.
    assert "## Errors by diagnosis" not in render_report(runs["orig"])


def test_worked_example_shows_provenance(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["lec"], tmp_path)
    path = run / "iter_01" / "verified.jsonl"
    samples = [json.loads(line) for line in path.read_text().splitlines()]
    first = next(s for s in samples if s["kept"])
    first["neighbour_ids"] = ["gsm8k/train/11", "gsm8k/train/12"]  # the fakes answer nothing right
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    example = section(render_report(run), "What the instructor saw and wrote")
    assert f"**sample:** `{first['id']}`" in example
    assert "**strategy:** `lec`" in example
    assert f"**prompt template:** `{first['template']}` (sha256 `{first['template_hash']}`)" in example
    assert "**instructor model:** `fake-teacher`" in example
    assert f"**error it addresses:** `{first['error_id']}`" in example
    assert "**correct neighbours shown:** `gsm8k/train/11`, `gsm8k/train/12`" in example
    baseline = render_report(runs["orig"])
    assert "This run is a **baseline**" in baseline and "none (20 real rows)" in baseline
    assert "**training row:** `gsm8k/train/" in section(baseline, "What the strategy picked")


def test_an_old_run_without_verify_or_retest_still_renders(real_runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(real_runs["le"], tmp_path)
    for k in (1, 2):
        for name in NEW_FILES:
            (run / f"iter_{k:02d}" / name).unlink()
        instruct = run / f"iter_{k:02d}" / "instruct.done"
        data = json.loads(instruct.read_text())
        del data["control_errors"]
        instruct.write_text(json.dumps(data))
    text = render_report(run)
    for title in ("Checks", "Fix rate", "Errors by diagnosis"):
        assert f"## {title}" not in text
    assert "## Scores" in text and "## Training" in text and "## What the instructor saw and wrote" in text
    row = [r for r in table_rows(section(text, "From errors to training data"), "1") if len(r) == 11][0]
    assert row[2] == "-" and row[7] == "-" and row[10] == "-"
    (compared,) = compare_runs([run])
    assert compared.targeted is None and compared.trained_on == 20
    assert comparison_table([compared])[1][0][-3:-1] == ["-", "-"]


# ---- lai compare --------------------------------------------------------------------------


def expected_score_cell(run_dir: Path, bench: str) -> str:
    evals = sorted(run_dir.glob("iter_*/eval.json"))
    last = json.loads(evals[-1].read_text())["scores"][bench]["score"]
    base = json.loads((run_dir / "iter_00" / "eval.json").read_text())["scores"][bench]["score"]
    return f"{100 * last:.1f}% ({100 * (last - base):+.1f})"


def test_compare_has_a_row_per_run_with_strategy_samples_and_deltas(real_runs: dict[str, Path]) -> None:
    dirs = [real_runs["le"], real_runs["lec"], real_runs["orig"]]
    rows = compare_runs(dirs)
    assert [r.name for r in rows] == ["le", "lec", "orig"]
    assert [r.strategy for r in rows] == ["le", "lec", "original"]
    assert [r.iterations for r in rows] == [2, 1, 1]
    for row, run_dir in zip(rows, dirs, strict=True):
        trained = sum(json.loads(p.read_text())["examples"] for p in run_dir.glob("iter_*/train.done"))
        assert row.trained_on == trained > 0
    le = rows[0].scores["gsm8k/test"]
    assert (le.iteration, le.score, le.baseline) == (2, 0.4, 0.1) and le.delta == pytest.approx(30.0)

    header, cells = comparison_table(rows)
    assert header[4:6] == ["gsm8k/test", "gsm8k/test@lm-eval"]  # the union, in order of first appearance
    by_name = {c[0]: dict(zip(header, c, strict=True)) for c in cells}
    assert by_name["le"]["strategy"] == "le" and by_name["lec"]["strategy"] == "lec (k=2)"
    assert by_name["orig"]["strategy"] == "original"
    assert by_name["le"]["gsm8k/test"] == expected_score_cell(real_runs["le"], "gsm8k/test") == "40.0% (+30.0)"
    assert by_name["lec"]["gsm8k/test"] == expected_score_cell(real_runs["lec"], "gsm8k/test")
    assert by_name["orig"]["gsm8k/test@lm-eval"] == expected_score_cell(real_runs["orig"], "gsm8k/test@lm-eval")
    assert by_name["le"]["gsm8k/test@lm-eval"] == "-" and by_name["lec"]["gsm8k/test@lm-eval"] == "-"
    last_retest = json.loads((real_runs["le"] / "iter_02" / "retest.done").read_text())
    t, c = last_retest["targeted"], last_retest["control"]
    assert by_name["le"]["fixed: targeted"] == f"{t['fixed']}/{t['n']} ({100 * t['fixed'] / t['n']:.0f}%)"
    assert by_name["le"]["fixed: control"] == f"{c['fixed']}/{c['n']} ({100 * c['fixed'] / c['n']:.0f}%)"
    assert by_name["orig"]["fixed: targeted"] == "-"  # real rows target no error
    assert by_name["le"]["instructor cost"] == "$0.0000" and by_name["orig"]["instructor cost"] == "none"

    text = render_markdown(rows)
    table = [line for line in text.splitlines() if line.startswith("|")]
    main = text[: text.index("## Is the difference more than noise?")]
    assert len([line for line in main.splitlines() if line.startswith("|")]) == 1 + 1 + 3  # header, rule, one row per run
    assert "| le | le | 2 | 20 | 40.0% (+30.0) | - |" in text
    # Then every pair of real_runs on each benchmark both evaluated (gsm8k/test@lm-eval is orig's alone).
    assert len(table) == 5 + 2 + 3


def test_compare_prices_instruct_and_resolve_tokens(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["lec"], tmp_path)
    instruct = run / "iter_01" / "instruct.done"
    data = json.loads(instruct.read_text())
    data["cost_usd"] = 0.25
    instruct.write_text(json.dumps(data))
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("prices: {}", "prices:\n    fake-teacher: {prompt: 1000000.0, completion: 0.0}"))
    resolve = [json.loads(line) for line in (run / "iter_01" / "verify_instruct.jsonl").read_text().splitlines()]
    (row,) = compare_runs([run])
    # 1e6 $ per 1M prompt tokens: one dollar per re-solve prompt token.
    assert row.cost_usd == pytest.approx(0.25 + sum(r["prompt_tokens"] for r in resolve))


def test_compare_refuses_a_folder_that_is_not_a_run(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(LaiError, match="not a lai run directory"):
        compare_runs([runs["le"], tmp_path])


def lai(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "lai.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_compare_command_prints_writes_markdown_and_fails_cleanly(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports" / "compare.md"
    result = lai("compare", str(runs["le"]), str(runs["lec"]), str(runs["orig"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    for needle in ("le", "lec (k=2)", "original", "gsm8k/test@lm-eval", "40.0% (+30.0)"):
        assert needle in result.stdout
    assert out.read_text() == render_markdown(compare_runs([runs["le"], runs["lec"], runs["orig"]]))

    bad = lai("compare", str(runs["le"]), str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr + bad.stdout
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nowhere is not a lai run directory" in errors[0]


def test_report_of_every_strategy_run_names_its_strategy(runs: dict[str, Path]) -> None:
    words: dict[str, Any] = {"le": "`le`", "lec": "`lec (k=2)`", "orig": "`original`"}
    for name, needle in words.items():
        assert f"**Strategy:** {needle}" in render_report(runs[name])
