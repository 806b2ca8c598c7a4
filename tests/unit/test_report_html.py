"""report.html shows everything report.md shows (issue 18, item 5), without a browser.

The page renders report.md's own sections, so this checks the promise where it can
break: every number of report.md, as many times as it appears there, is on the page,
the training section among them; model output stays text.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from lai.config import build_config
from lai.pipeline import Pipeline
from lai.report.html import render_html
from lai.report.markdown import render_report
from tests.helpers.markdown import page_text
from tests.pipeline.test_loop import fake_config

NUMBER = re.compile(r"\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    base = tmp_path_factory.mktemp("html")
    Pipeline(build_config(fake_config(data_dir, base / "requests.log")), base / "run").run()
    run_dir = base / "run"
    # What a real training run leaves in train.done (the noop trainer trains nothing).
    marker = run_dir / "iter_01" / "train.done"
    data = json.loads(marker.read_text())
    data.update(trained=True, method="lora", steps=12, first_loss=2.2071, last_loss=1.7043)
    marker.write_text(json.dumps(data))
    return run_dir


def test_every_number_of_report_md_is_on_the_page(run: Path) -> None:
    md = render_report(run)
    page = page_text(render_html([run]))
    missing = Counter(NUMBER.findall(md)) - Counter(NUMBER.findall(page))
    assert not missing, f"numbers of report.md missing from report.html: {dict(missing)}"


def test_the_page_has_the_training_section_with_steps_and_loss(run: Path) -> None:
    page = page_text(render_html([run]))
    training = page[page.index("Training iteration method") :]
    assert "| 1 | lora |" not in training  # a table, not markdown source
    assert "1 lora" in training and "12 2.207 -> 1.704" in training


def test_every_section_of_report_md_is_a_section_of_the_page(run: Path) -> None:
    html = render_html([run])
    for title in re.findall(r"^## (.+)$", render_report(run), flags=re.M):
        assert f"<h2>{title}</h2>" in html, title


def test_model_output_in_report_md_stays_text_on_the_page(run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    path = copy / "iter_01" / "collect.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row["response"] = '<script>alert(1)</script> ![x](http://example.com/x.png) [y](javascript:alert(1))'
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = render_html([copy])
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "<img src=\"http" not in html and 'href="javascript' not in html
