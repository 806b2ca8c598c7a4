"""Every claim of a change carries the paired test's verdict (issue 18, item 3).

McNemar's exact test against hand-computed binomial tails, then one fake run whose
per-item records are rewritten so iteration 1 gains 2 items (0/10 -> 2/10: inside the
noise, p = 0.5) and iteration 2 gains 8 (p = 2/256): the terminal summary, report.md,
report.html, the dataset card and ``lai compare`` must all say so, in the same words.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from lai.config import build_config
from lai.export import export_dataset
from lai.pipeline import Pipeline
from lai.report.compare import compare_runs, render_markdown
from lai.report.html import render_html
from lai.report.markdown import render_report
from lai.report.paired import change_tests
from lai.report.stats import format_p, mcnemar_exact, paired_test
from lai.report.terminal import run_summary
from tests.helpers.markdown import page_text
from tests.pipeline.test_loop import fake_config

NOISE = "not distinguishable from noise (p = 0.5)"
SIGNAL = "distinguishable from noise (p = 0.0078)"


def test_mcnemar_exact_is_the_two_sided_binomial_tail_of_the_discordant_pairs() -> None:
    # 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), capped at 1, by hand:
    assert mcnemar_exact(0, 2) == 0.5  # 2 * (1/4)
    assert mcnemar_exact(0, 6) == 2 / 64
    assert mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)  # 0.0215
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(8, 0) == mcnemar_exact(0, 8) == 2 / 256
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
    assert format_p(2 / 256) == "0.0078" and format_p(1e-5) == "< 0.001" and format_p(1.0) == "1"


def test_paired_test_counts_only_items_both_sides_answered() -> None:
    before = {"a": False, "b": True, "c": False, "d": True, "only-before": True}
    after = {"a": True, "b": True, "c": False, "d": False, "only-after": True}
    test = paired_test(before, after)
    assert test is not None
    assert (test.items, test.before, test.after, test.gained, test.lost) == (4, 2, 2, 1, 1)
    assert not test.significant and test.verdict == "not distinguishable from noise"
    assert paired_test({"x": True}, {"y": True}) is None


def set_outcomes(run_dir: Path, k: int, right: int) -> None:
    """The first ``right`` items of iteration k's benchmark records right, the rest wrong; scores to match."""
    path = run_dir / f"iter_{k:02d}" / "eval" / "gsm8k-test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for i, row in enumerate(sorted(rows, key=lambda r: r["id"])):
        row["correct"] = i < right
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("eval.json", "evaluate.done"):
        marker = run_dir / f"iter_{k:02d}" / name
        data = json.loads(marker.read_text())
        data["scores"]["gsm8k/test"].update(correct=right, score=right / len(rows))
        marker.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    base = tmp_path_factory.mktemp("significance")
    Pipeline(build_config(fake_config(data_dir, base / "requests.log")), base / "run").run()
    run_dir = base / "run"
    for k, right in ((0, 0), (1, 2), (2, 8)):
        set_outcomes(run_dir, k, right)
    return run_dir


def test_each_change_gets_its_verdict_from_the_per_item_records(run: Path) -> None:
    tests = change_tests(run)
    assert sorted(tests) == [(1, "gsm8k/test"), (2, "gsm8k/test")]
    assert (tests[(1, "gsm8k/test")].gained, tests[(1, "gsm8k/test")].lost) == (2, 0)
    assert tests[(2, "gsm8k/test")].significant and not tests[(1, "gsm8k/test")].significant


def test_the_terminal_summary_says_whether_a_change_is_noise(run: Path) -> None:
    console = Console(record=True, width=250)
    console.print(run_summary(run))
    text = " ".join(console.export_text().split())
    assert "+20.0 pts" in text and NOISE in text
    assert "+80.0 pts" in text and SIGNAL in text
    assert "McNemar's exact test" in text


def test_report_md_and_html_say_it_in_the_same_words(run: Path) -> None:
    md = render_report(run)
    scores = md[md.index("## Scores") : md.index("## From errors")]
    assert NOISE in scores and SIGNAL in scores and "McNemar's exact test" in scores
    assert "0/10 -> 2/10 (+20.0 points), not distinguishable from noise (McNemar's exact test, p = 0.5: 2 item(s) gained, 0 lost of 10)" in scores
    html = page_text(render_html([run]))
    assert NOISE in html and SIGNAL in html and "McNemar's exact test" in html


def test_the_dataset_card_carries_the_verdict(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("datasets")  # the export writes a Hugging Face dataset (the train extra)
    card = (export_dataset(run, tmp_path / "export").card).read_text()
    effect = card[card.index("## Effect on the target") :]
    assert NOISE in effect and SIGNAL in effect and "McNemar's exact test" in effect


def test_compare_tests_every_pair_of_runs_on_the_same_items(run: Path, tmp_path: Path) -> None:
    other = Path(shutil.copytree(run, tmp_path / "other"))
    set_outcomes(other, 2, 1)  # the other run ends at 1/10 against this run's 8/10
    (pair_row,) = [line for line in render_markdown(compare_runs([run, other])).splitlines() if re.match(r"\| fake \(run\) \| fake \(other\)", line)]
    cells = [c.strip() for c in pair_row.strip("|").split("|")]
    # items, A right, B right, only A right, only B right, verdict: 7 discordant items, all one way.
    assert cells[2:] == ["gsm8k/test", "10", "8", "1", "7", "0", f"distinguishable from noise (p = {format_p(2 / 128)})"]
    page = page_text(render_html([run, other]))
    assert "Is the difference more than noise?" in page
    assert f"fake (run) fake (other) gsm8k/test 10 8 1 7 0 distinguishable from noise (p = {format_p(2 / 128)})" in page
