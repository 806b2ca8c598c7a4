"""report.html in a real headless browser: Debian's chromium driven by playwright.

Two small fake runs (scripted target and instructor, noop trainer; ``le`` over two
iterations and ``lec`` over one) are rendered, one page per run and a comparison page,
and opened in chromium. The test checks what a reader would: every plot image decodes,
the tables hold the run's own numbers, a diagnosis group opens to its records, nothing
is fetched from anywhere, and the console stays free of errors. The README's image is
not of these fakes: ``make screenshot`` runs ``configs/demo.yaml`` and points the last
test at that run (``LAI_DEMO_RUN``).

``make test`` installs chromium (apt) and playwright (the dev extra); elsewhere the
test skips with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lai.config import build_config
from lai.pipeline import Pipeline
from lai.report.html import write_html
from lai.store import load_summaries
from tests.pipeline.test_loop import fake_config

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags for a closed network (no background fetches) and a root user (no sandbox).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.slow  # drives a real browser


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "gsm8k" / "train.jsonl").exists():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, strategy, iterations in (("le", "le", 2), ("lec", "lec", 1)):
        config = fake_config(SHARED_DATA, root / f"{name}.log", name=f"fake-{name}", iterations=iterations)
        config["strategy"] = {"name": strategy, "budget": 20, "embedder": "hashing"}
        Pipeline(build_config(config), root / name).run()
        made[name] = root / name
    return made


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs Debian's chromium package)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """The page, its console errors, and every request that left the file itself."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    fetched: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: fetched.append(request.url) if not request.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors, fetched


def images_decoded(page: Any) -> list[bool]:
    return page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")


def table_rows(page: Any, css: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"{css} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")


def test_the_run_page_shows_its_numbers_in_a_real_browser(runs: dict[str, Path], browser: Any, tmp_path: Path) -> None:
    run = runs["le"]
    page, errors, fetched = open_page(browser, write_html([run]))
    summaries = load_summaries(run)

    # Plots: scores (1 benchmark), a funnel and a fix-rate chart per iteration, stage times.
    decoded = images_decoded(page)
    assert len(decoded) == 1 + 2 + 2 + 1 and all(decoded)
    # The summary row: start and last scores of the benchmark, from eval.json.
    evals = {k: json.loads((run / f"iter_{k:02d}/eval.json").read_text())["scores"]["gsm8k/test"] for k in (0, 2)}
    [summary] = table_rows(page, "table.summary")
    assert summary[0] == "gsm8k/test" and summary[1] == "in-domain"
    assert summary[2].startswith(f"{100 * evals[0]['score']:.1f}%") and summary[3].startswith(f"{100 * evals[2]['score']:.1f}%")
    # The funnel: errors found and kept samples per iteration, from the stage summaries.
    funnel = table_rows(page, "table.funnel")
    for row, k in zip(funnel, (1, 2), strict=True):
        assert row[0] == str(k) and row[1] == f"{summaries[k]['collect']['wrong']} of {summaries[k]['collect']['n']}"
        assert str(summaries[k]["verify"]["kept"]) in row
    # Fix rate: the three groups of each iteration with their counts.
    fix = table_rows(page, "table.fix")
    assert [(r[0], r[1], r[2]) for r in fix] == [
        (str(k), group, str(summaries[k]["retest"][group]["n"])) for k in (1, 2) for group in ("targeted", "control", "other")
    ]
    # A diagnosis group opens to the error records behind it.
    group = page.locator("details.diagnosis").first
    assert not group.locator(".card").first.is_visible()
    group.locator("summary").click()
    card = group.locator(".card").first
    assert card.is_visible() and "Question" in card.inner_text()
    assert page.locator("table.cost tbody tr").count() >= 2

    assert errors == [] and fetched == []
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_the_readme_screenshot_comes_from_a_real_demo_run(browser: Any) -> None:
    """``make screenshot``: the README's image is a real ``configs/demo.yaml`` run's page.

    Skipped unless ``LAI_DEMO_RUN`` names that run's directory (the demo takes minutes);
    the image goes to ``LAI_SCREENSHOT`` (default ``docs/images/report.png``).
    """
    demo = os.environ.get("LAI_DEMO_RUN")
    if not demo:
        pytest.skip("set LAI_DEMO_RUN to a finished run of configs/demo.yaml (make screenshot does)")
    run = Path(demo).resolve()
    config = yaml.safe_load((run / "config.yaml").read_text())
    demo_config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    assert config["name"] == demo_config["name"] and config["target"]["model"] == demo_config["target"]["model"]
    assert (run / "iter_01" / "retest.done").exists(), "the demo run has not finished"
    page, errors, fetched = open_page(browser, write_html([run]))
    assert errors == [] and fetched == [] and all(images_decoded(page))
    # The page shows this run's numbers: start and last score of each benchmark.
    evals = {k: json.loads((run / f"iter_{k:02d}/eval.json").read_text())["scores"] for k in (0, 1)}
    for row in table_rows(page, "table.summary"):
        first, last = evals[0][row[0]], evals[1][row[0]]
        assert row[2].startswith(f"{100 * first['score']:.1f}%") and row[3].startswith(f"{100 * last['score']:.1f}%")
        assert "distinguishable from noise" in row[5]
    page.set_viewport_size({"width": 1200, "height": 1400})
    page.evaluate("window.scrollTo(0, 0)")
    out = Path(os.environ.get("LAI_SCREENSHOT") or REPO / "docs" / "images" / "report.png")
    page.screenshot(path=str(out), full_page=False)
    assert out.stat().st_size > 10_000


def test_the_comparison_page_puts_the_strategies_side_by_side(runs: dict[str, Path], browser: Any, tmp_path: Path) -> None:
    out = write_html([runs["le"], runs["lec"]], tmp_path / "comparison.html")
    page, errors, fetched = open_page(browser, out)
    rows = table_rows(page, "table.comparison")
    assert [r[0] for r in rows] == ["fake-le", "fake-lec"]
    assert rows[0][1] == "le" and rows[1][1].startswith("lec")
    # One overlay plot per benchmark with both runs, then each run's own section.
    assert page.locator("#comparison figure img").count() == 1
    assert page.locator("section.run").count() == 2
    assert all(images_decoded(page))
    assert errors == [] and fetched == []


def test_model_output_is_escaped_not_rendered(runs: dict[str, Path], browser: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["lec"], run)
    diagnoses = json.loads((run / "iter_01/diagnoses.json").read_text())
    diagnoses["groups"][0]["label"] = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    (run / "iter_01/diagnoses.json").write_text(json.dumps(diagnoses))
    page, errors, fetched = open_page(browser, write_html([run]))
    assert page.title() != "pwned" and "<script>" in page.locator("details.diagnosis summary").first.inner_text()
    assert fetched == []
