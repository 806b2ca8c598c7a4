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

from lai.pipeline import load_summaries
from lai.report import plots
from lai.report.compare import compare_runs, comparison_table
from lai.report.markdown import (
    DIRECT_STRATEGIES,
    FIX_GROUPS,
    contamination_rows,
    resolve_usage,
    strategy_label,
)
from lai.report.stats import format_interval
from lai.store import RunStore, atomic_write_text, read_json, require_run_dir, saved_config

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
    summary: Table | None = None
    score_figures: list[Figure] = field(default_factory=list)
    score_table: Table | None = None
    funnel_figures: list[Figure] = field(default_factory=list)
    funnel_table: Table | None = None
    contamination: Table | None = None
    fix_figures: list[Figure] = field(default_factory=list)
    fix_table: Table | None = None
    cost_table: Table | None = None
    time_figure: Figure | None = None
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def summary_table(series: dict[str, list[plots.Point]], config: dict[str, Any]) -> Table | None:
    """The paper's Table 1 view: start, end and change per benchmark, in- vs out-of-domain."""
    domain = in_domain(config)
    rows = []
    for bench, points in sorted(series.items(), key=lambda item: (item[0].split("/")[0] not in domain, item[0])):
        first, last = points[0], points[-1]
        delta = 100 * (last.score - first.score) if last.iteration != first.iteration else None
        rows.append([
            bench,
            "in-domain" if bench.split("/")[0] in domain else "out-of-domain",
            f"{_pct(first.correct, first.n)} ({format_interval(first.correct, first.n)})",
            f"{_pct(last.correct, last.n)} ({format_interval(last.correct, last.n)})" if delta is not None else "-",
            f"{delta:+.1f}" if delta is not None else "-",
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
    )
    return Table(["benchmark", "domain", "start", "last", "change (points)", "n"], rows, caption)


def _funnel(k: int, s: dict[str, Any]) -> tuple[list[tuple[str, int]], list[Any]] | None:
    collect, instruct, parse, verify, train = (s.get(n) or {} for n in ("collect", "instruct", "parse", "verify", "train"))
    if not collect:
        return None
    steps = [("errors found", int(collect.get("wrong", 0)))]
    if "control_errors" in instruct:
        steps.append(("shown (not control)", int(collect.get("wrong", 0)) - int(instruct["control_errors"])))
    if "direct_samples" in instruct:
        steps.append(("real rows picked", int(instruct["direct_samples"])))
    elif "requests" in instruct:
        steps.append(("requests", int(instruct.get("requests", 0))))
    if parse:
        steps += [("samples parsed", int(parse.get("parsed", 0))), ("passed format", int(parse.get("kept", 0)))]
    if verify:
        steps.append(("passed verification", int(verify.get("kept", 0))))
    if train:
        steps.append(("trained on", int(train.get("examples", 0)) if train.get("trained") else 0))
    reasons = {**{f"parse: {r}": c for r, c in (parse.get("drop_reasons") or {}).items()},
               **{f"verify: {r}": c for r, c in (verify.get("drop_reasons") or {}).items()}}  # fmt: skip
    row = [k, *(value for _, value in steps), "; ".join(f"{r} {c}" for r, c in reasons.items()) or "none"]
    return steps, row


def _fix(summaries: dict[int, dict[str, Any]]) -> tuple[list[Figure], Table | None]:
    figures, rows = [], []
    for k, s in sorted(summaries.items()):
        retest = s.get("retest")
        if not retest:
            continue
        groups = [(name, int(retest[name]["fixed"]), int(retest[name]["n"])) for name in FIX_GROUPS if name in retest]
        figures.append(Figure(f"Iteration {k}", data_uri(plots.rate_bars(groups, f"fix rate, iteration {k}"))))
        for name, fixed, n in groups:
            rows.append([k, name, n, fixed, _pct(fixed, n), format_interval(fixed, n)])
    caption = (
        "The trained model re-answers this iteration's errors. Targeted errors have at least one kept "
        "sample made from them; control errors were held back from the strategy by a seeded draw, so "
        "their rate is what training did in general; the gap is what targeting added. Overlapping "
        "intervals mean the gap may be chance."
    )
    table = Table(["iteration", "errors", "n", "fixed", "rate", "95 % interval"], rows, caption) if rows else None
    return figures, table


def _cost(store: RunStore, summaries: dict[int, dict[str, Any]], prices: dict[str, Any]) -> Table | None:
    rows = []
    for k, s in sorted(summaries.items()):
        instruct = s.get("instruct") or {}
        if instruct and "direct_samples" not in instruct:
            rows.append([k, "write samples", ", ".join(instruct.get("models", [])) or "-", instruct.get("requests", 0),
                         instruct.get("prompt_tokens", 0), instruct.get("completion_tokens", 0), f"${instruct.get('cost_usd', 0):.4f}"])  # fmt: skip
        usage = resolve_usage(store, k, prices) if k > 0 else None
        if usage and usage["ok"] + usage["failed"]:
            rows.append([k, "re-solve (verify)", ", ".join(usage["models"]) or "-", usage["ok"] + usage["failed"],
                         usage["prompt_tokens"], usage["completion_tokens"], f"${usage['cost_usd']:.4f}"])  # fmt: skip
    header = ["iteration", "requests for", "instructor", "requests", "prompt tokens", "completion tokens", "cost"]
    return Table(header, rows, "Cost from instructor.prices (USD per 1M tokens).") if rows else None


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
    view.summary = summary_table(series, config)
    view.score_figures = [Figure(bench, data_uri(plots.score_lines({bench: points}, bench))) for bench, points in sorted(series.items())]
    score_rows = [[bench, p.iteration, p.correct, p.n, _pct(p.correct, p.n), format_interval(p.correct, p.n)] for bench, points in sorted(series.items()) for p in points]
    view.score_table = Table(["benchmark", "iteration", "correct", "n", "score", "95 % interval"], score_rows) if score_rows else None

    funnel_rows = []
    header: list[str] = []
    for k, s in sorted(summaries.items()):
        found = _funnel(k, s) if k > 0 else None
        if found:
            steps, row = found
            view.funnel_figures.append(Figure(f"Iteration {k}", data_uri(plots.funnel_bars(steps, f"iteration {k}: errors to training data"))))
            header = ["iteration", *(label for label, _ in steps), "drop reasons"]
            funnel_rows.append(row)
    view.funnel_table = Table(header, funnel_rows) if funnel_rows else None

    contamination = contamination_rows(summaries)
    if contamination:
        view.contamination = Table(
            ["iteration", "benchmark", "samples checked", "contaminated", "rate"], contamination,
            "Generated samples overlapping an evaluation set (13-gram overlap or embedding near copy).",
        )  # fmt: skip
    view.fix_figures, view.fix_table = _fix(summaries)
    view.cost_table = _cost(store, summaries, (config.get("instructor") or {}).get("prices") or {})
    manifest = read_json(run_dir / "manifest.json", default={}) or {}
    durations = [(key, float(entry.get("seconds", 0))) for key, entry in (manifest.get("stages") or {}).items()]
    if durations:
        view.time_figure = Figure("Wall time per stage", data_uri(plots.duration_bars(durations, "wall time per stage")))
    view.diagnoses = _diagnoses(store, summaries)
    if strategy_cfg.get("name") in DIRECT_STRATEGIES:
        view.notes.append(f"Strategy {strategy_cfg.get('name')} trains on real training rows; no instructor was asked.")
    instructor = config.get("instructor") or {}
    if (instructor.get("local") or {}).get("enabled") and strategy_cfg.get("name") not in DIRECT_STRATEGIES:
        view.notes.append(
            "The instructor is a small local model; if it is the embedded 135M model, expect format "
            "changes rather than accuracy gains, and read small differences as noise."
        )
    return view


# ---- several runs ---------------------------------------------------------------------


def comparison(run_dirs: list[Path]) -> tuple[Table, list[Figure]]:
    rows = compare_runs(run_dirs)
    header, cells = comparison_table(rows)
    per_run = {row.name: score_points(row.run_dir) for row in rows}
    benches = sorted({bench for series in per_run.values() for bench in series})
    figures = [
        Figure(bench, data_uri(plots.score_lines({name: series[bench] for name, series in per_run.items() if bench in series}, bench)))
        for bench in benches
    ]
    caption = "The runs side by side: scores at each run's last evaluated iteration with the change from its iteration 0."
    return Table(header, cells, caption), figures


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
