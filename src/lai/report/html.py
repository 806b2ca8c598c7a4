"""report.html: one self-contained page per run, and a page comparing several runs.

The markdown report is for reading in a terminal or a pull request; this page is for
seeing at a glance whether learning from errors helped, where, and at what cost, then
drilling from a number down to the text behind it. It is one file: plots are SVG data
URIs, the style sheet is inline, there is no script and nothing is fetched, so it opens
offline and can be attached to an email.

Everything on it is read from the run directory (stage summaries, ``eval.json``,
``diagnoses.json``, ``manifest.json``), like the markdown report, so it renders any run,
finished or not. Rendering is a Jinja2 template (``templates/report.html.j2``) with
autoescaping on: model output is untrusted text and must never become markup.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from lai.report import plots
from lai.report.compare import PAIRS_NOTES, compare_runs, comparison_table, pair_tests, pairs_table
from lai.report.markdown import build_report
from lai.report.paired import VERDICT_NOTE, change_test, verdict_cell
from lai.report.stats import format_interval
from lai.report.vocabulary import (
    CONTROL,
    ERRORS_FOUND,
    FIX_GROUPS,
    KEPT_AFTER_PARSE,
    KEPT_AFTER_VERIFY,
    PARSED,
    REQUESTS,
    TRAINED_ON,
    WELL_FORMED,
    change_points,
    points_text,
    strategy_label,
    well_formed,
)
from lai.store import (
    RunStore,
    atomic_write_text,
    load_summaries,
    read_json,
    require_run_dir,
    saved_config,
)

DIAGNOSIS_GROUPS = 12  # groups shown per iteration; the rest are counted
ERRORS_PER_GROUP = 5  # example records inside an expanded group


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


@dataclass
class Figure:
    title: str
    uri: str
    caption: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class RunView:
    """What the template shows for one run."""

    name: str
    run_dir: str
    config: dict[str, Any]
    strategy: str
    preamble: Markup = Markup("")
    summary: Table | None = None
    sections: list[Section] = field(default_factory=list)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Section:
    """One section of report.md, rendered, with the plots that belong beside it."""

    title: str
    html: Markup
    css: str
    figures: list[Figure] = field(default_factory=list)


# ---- report.md, rendered -------------------------------------------------------------

#: Class of each report.md section's tables on the page (what a reader's style sheet or a test selects).
SECTION_CSS = {
    "Scores": "scores", "From errors to training data": "funnel", "Terms": "terms", "Checks": "checks",
    "Fix rate": "fix", "Errors by diagnosis": "diagnoses", "Training": "training", "Cost and time": "cost",
    "Files": "files",
}  # fmt: skip


def markdown_html(text: str, table_class: str = "") -> Markup:
    """report.md's markdown as HTML, safe for untrusted text inside it.

    Raw HTML is escaped, not passed through (model output appears in the report), and
    links and images are not rendered, so the page never fetches anything.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable(["image", "link", "autolink"], True)
    html = md.render(text)
    if table_class:
        html = html.replace("<table>", f'<table class="{table_class}">')
    return Markup(html)  # noqa: S704 - markdown-it escaped every piece of text


# ---- reading a run --------------------------------------------------------------------


def score_points(run_dir: Path) -> dict[str, list[plots.Point]]:
    """Per benchmark: (iteration, correct, n) for every evaluated iteration."""
    store = RunStore(run_dir)
    series: dict[str, list[plots.Point]] = {}
    for k, stages in sorted(load_summaries(run_dir).items()):
        data = read_json(store.path(k, "eval.json"), default=None)
        scores = data.get("scores") if isinstance(data, dict) else (stages.get("evaluate") or {}).get("scores")
        for bench, result in (scores or {}).items():
            series.setdefault(bench, []).append(plots.Point(k, int(result.get("correct", 0)), int(result.get("n", 0))))
    return series


def in_domain(config: dict[str, Any]) -> set[str]:
    """Tasks the run trains on (its selection pools): their benchmarks are in-domain."""
    return {pool.get("task") for pool in ((config.get("select") or {}).get("pools") or [])}


def _pct(correct: int, n: int) -> str:
    return f"{100 * correct / n:.1f}%" if n else "-"


def summary_table(series: dict[str, list[plots.Point]], config: dict[str, Any], run_dir: Path | None = None) -> Table | None:
    """The paper's Table 1 view: start, end, change and its paired test per benchmark, in- vs out-of-domain."""
    domain = in_domain(config)
    rows = []
    for bench, points in sorted(series.items(), key=lambda item: (item[0].split("/")[0] not in domain, item[0])):
        first, last = points[0], points[-1]
        delta = change_points(last.score, first.score) if last.iteration != first.iteration else None
        test = change_test(run_dir, last.iteration, bench, against=first.iteration) if run_dir and delta is not None else None
        rows.append([
            bench,
            "in-domain" if bench.split("/")[0] in domain else "out-of-domain",
            f"{_pct(first.correct, first.n)} ({format_interval(first.correct, first.n)})",
            f"{_pct(last.correct, last.n)} ({format_interval(last.correct, last.n)})" if delta is not None else "-",
            points_text(delta) if delta is not None else "-",
            verdict_cell(test),
            last.n,
        ])  # fmt: skip
    if not rows:
        return None
    averages = []
    for label in ("in-domain", "out-of-domain"):
        deltas = [float(r[4]) for r in rows if r[1] == label and r[4] != "-"]
        if deltas:
            averages.append(f"{label}: {sum(deltas) / len(deltas):+.1f} points on average over {len(deltas)} benchmark(s)")
    caption = (
        f"Iteration {series and min(p.iteration for ps in series.values() for p in ps)} against the last "
        "evaluated iteration; 95 % Wilson intervals in brackets. " + "; ".join(averages)
        + ". " + VERDICT_NOTE.replace("*", "")
    )
    return Table(["benchmark", "domain", "start", "last", "change (points)", "paired test", "n"], rows, caption)


def _funnel(k: int, s: dict[str, Any]) -> list[tuple[str, int]] | None:
    """The funnel plot's bars, in the report's vocabulary (:mod:`lai.report.vocabulary`)."""
    collect, instruct, parse, verify, train = (s.get(n) or {} for n in ("collect", "instruct", "parse", "verify", "train"))
    if not collect:
        return None
    steps = [(ERRORS_FOUND, int(collect.get("wrong", 0)))]
    if "control_errors" in instruct:
        steps.append((CONTROL, int(instruct["control_errors"])))
    if "direct_samples" in instruct:
        steps.append(("real rows picked", int(instruct["direct_samples"])))
    elif "requests" in instruct:
        steps.append((REQUESTS, int(instruct.get("requests", 0))))
    if parse:
        steps += [(PARSED, int(parse.get("parsed", 0))), (WELL_FORMED, well_formed(parse) or 0), (KEPT_AFTER_PARSE, int(parse.get("kept", 0)))]
    if verify:
        steps.append((KEPT_AFTER_VERIFY, int(verify.get("kept", 0))))
    if train:
        steps.append((TRAINED_ON, int(train.get("examples", 0)) if train.get("trained") else 0))
    return steps


def _fix_figures(summaries: dict[int, dict[str, Any]]) -> list[Figure]:
    figures = []
    for k, s in sorted(summaries.items()):
        retest = s.get("retest")
        if not retest:
            continue
        groups = [(name, int(retest[name]["fixed"]), int(retest[name]["n"])) for name in FIX_GROUPS if name in retest]
        figures.append(Figure(f"Iteration {k}", data_uri(plots.rate_bars(groups, f"fix rate, iteration {k}"))))
    return figures


def _diagnoses(store: RunStore, summaries: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    iterations = []
    for k in sorted(summaries):
        data = read_json(store.path(k, "diagnoses.json"), default=None) if k > 0 else None
        if not isinstance(data, dict) or not data.get("groups"):
            continue
        groups = data["groups"]
        iterations.append({
            "iteration": k,
            "groups": [{**g, "errors": g.get("errors", [])[:ERRORS_PER_GROUP], "more": max(0, len(g.get("errors", [])) - ERRORS_PER_GROUP)}
                       for g in groups[:DIAGNOSIS_GROUPS]],
            "more": len(groups[DIAGNOSIS_GROUPS:]),
        })  # fmt: skip
    return iterations


def run_view(run_dir: Path) -> RunView:
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    store = RunStore(run_dir)
    config = saved_config(run_dir)
    summaries = load_summaries(run_dir)
    strategy_cfg = config.get("strategy") or {}
    view = RunView(
        name=str(config.get("name", run_dir.name)), run_dir=str(run_dir), config=config,
        strategy=strategy_label(strategy_cfg),
    )  # fmt: skip
    series = score_points(run_dir)
    view.summary = summary_table(series, config, run_dir)
    figures: dict[str, list[Figure]] = {
        "Scores": [Figure(bench, data_uri(plots.score_lines({bench: points}, bench))) for bench, points in sorted(series.items())],
        "From errors to training data": [
            Figure(f"Iteration {k}", data_uri(plots.funnel_bars(steps, f"iteration {k}: errors to training data")))
            for k, s in sorted(summaries.items())
            if k > 0 and (steps := _funnel(k, s))
        ],
        "Fix rate": _fix_figures(summaries),
    }
    manifest = read_json(run_dir / "manifest.json", default={}) or {}
    durations = [(key, float(entry.get("seconds", 0))) for key, entry in (manifest.get("stages") or {}).items()]
    if durations:
        figures["Cost and time"] = [Figure("Wall time per stage, all attempts", data_uri(plots.duration_bars(durations, "wall time per stage")))]
    report = build_report(run_dir)
    view.preamble = markdown_html(report.preamble)
    view.sections = [
        Section(title, markdown_html(body, SECTION_CSS.get(title, "")), SECTION_CSS.get(title, ""), figures.get(title, []))
        for title, body in report.sections
    ]
    view.diagnoses = _diagnoses(store, summaries)
    return view


# ---- several runs ---------------------------------------------------------------------


def comparison(run_dirs: list[Path]) -> tuple[Table, list[Figure], Table | None]:
    """The comparison table, one overlay plot per benchmark, and the paired test of every pair of runs."""
    rows = compare_runs(run_dirs)
    header, cells = comparison_table(rows)
    per_run = {row.name: score_points(row.run_dir) for row in rows}
    benches = sorted({bench for series in per_run.values() for bench in series})
    figures = [
        Figure(bench, data_uri(plots.score_lines({name: series[bench] for name, series in per_run.items() if bench in series}, bench)))
        for bench in benches
    ]
    caption = "The runs side by side: scores at each run's last evaluated iteration with the change from its iteration 0."
    pairs = pair_tests(rows)
    pair_table = Table(*pairs_table(pairs), PAIRS_NOTES.replace("*", "")) if pairs else None
    return Table(header, cells, caption), figures, pair_table


# ---- rendering ------------------------------------------------------------------------


def _environment():  # type: ignore[no-untyped-def]
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("lai.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def render_html(run_dirs: list[Path]) -> str:
    """One run: its report. Several: the comparison first, then each run's report."""
    runs = [run_view(Path(d)) for d in run_dirs]
    compared = comparison([Path(d) for d in run_dirs]) if len(run_dirs) > 1 else None
    title = runs[0].name if len(runs) == 1 else "comparison of " + ", ".join(r.name for r in runs)
    template = _environment().get_template("report.html.j2")
    return template.render(title=title, runs=runs, comparison=compared)


def write_html(run_dirs: list[Path], out: Path | None = None) -> Path:
    """``report.html`` in the run directory (one run), or ``out`` (default: beside the first run)."""
    if out is None:
        first = Path(run_dirs[0])
        out = first / "report.html" if len(run_dirs) == 1 else first.parent / "comparison.html"
    atomic_write_text(out, render_html([Path(d) for d in run_dirs]))
    return out
