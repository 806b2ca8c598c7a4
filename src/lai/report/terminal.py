"""The one-screen summary ``lai run`` prints when it ends.

Enough to decide what to open next: scores with their 95 % intervals, the change from
the start and whether it is distinguishable from noise (a paired test), the
error-to-sample funnel and fix rate of each iteration, what the instructor cost, and
where the time went. The reports hold the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from lai.report.paired import VERDICT_NOTE, change_tests, verdict_cell
from lai.report.stats import PairedTest, format_interval
from lai.report.vocabulary import (
    CONTROL,
    ERRORS_FOUND,
    KEPT_AFTER_PARSE,
    KEPT_AFTER_VERIFY,
    PARSED,
    TRAINED_ON,
    WELL_FORMED,
    change_points,
    points_text,
    trains_on_real_rows,
    well_formed,
)
from lai.store import load_summaries, read_json, saved_config


def _scores(summaries: dict[int, dict[str, Any]], tests: dict[tuple[int, str], PairedTest]) -> Table:
    table = Table(title="scores", title_justify="left", caption=VERDICT_NOTE.replace("*", ""), caption_justify="left")
    for column in ("iteration", "benchmark", "score", "95 % interval", "change", "paired test vs iteration 0"):
        table.add_column(column)
    baseline = (summaries.get(0, {}).get("evaluate") or {}).get("scores", {})
    for k, stages in sorted(summaries.items()):
        for bench, result in (stages.get("evaluate") or {}).get("scores", {}).items():
            base = baseline.get(bench)
            change = f"{points_text(change_points(result['score'], base['score']))} pts" if base and k else ""
            table.add_row(
                str(k), bench, f"{100 * result['score']:.1f}%",
                format_interval(int(result.get("correct", 0)), int(result.get("n", 0))), change,
                verdict_cell(tests.get((k, bench))) if k else "",
            )  # fmt: skip
    return table


def _iteration_line(k: int, s: dict[str, Any], real_rows: bool) -> str:
    collect, instruct, parse, verify, train, retest = (
        s.get(name) or {} for name in ("collect", "instruct", "parse", "verify", "train", "retest")
    )
    parts = [f"{collect.get('wrong', '?')} {ERRORS_FOUND} in {collect.get('n', '?')} questions"]
    if "control_errors" in instruct:
        parts[-1] += f", {instruct['control_errors']} {CONTROL}"
    if real_rows and instruct:
        parts.append(f"{instruct.get('direct_samples', 0)} real rows")
    elif instruct:
        parts.append(f"{instruct.get('requests', 0)} requests")
    if parse:
        parts.append(
            f"{parse.get('parsed', 0)} {PARSED}, {well_formed(parse)} {WELL_FORMED}, {parse.get('kept', 0)} {KEPT_AFTER_PARSE}"
        )
    if verify:
        parts.append(f"{verify.get('kept', 0)} {KEPT_AFTER_VERIFY}")
    if train:
        parts.append(f"{TRAINED_ON} {train.get('examples', 0)}" if train.get("trained") else "not trained")
    line = f"iteration {k}: " + " -> ".join(parts)
    if retest:
        targeted, control = retest.get("targeted") or {}, retest.get("control") or {}
        line += (
            f"; fixed after training: targeted {targeted.get('fixed', 0)}/{targeted.get('n', 0)}, "
            f"control {control.get('fixed', 0)}/{control.get('n', 0)}"
        )
    return line


def run_summary(run_dir: Path) -> Group:
    summaries = load_summaries(run_dir)
    real_rows = trains_on_real_rows(saved_config(run_dir).get("strategy"))
    lines = [_iteration_line(k, s, real_rows) for k, s in sorted(summaries.items()) if k > 0 and "collect" in s]
    cost = sum(float((s.get("instruct") or {}).get("cost_usd", 0.0)) for s in summaries.values())
    tokens = sum(
        int((s.get("instruct") or {}).get(key, 0)) for s in summaries.values() for key in ("prompt_tokens", "completion_tokens")
    )
    manifest = read_json(run_dir / "manifest.json", default={}) or {}
    entries = (manifest.get("stages") or {}).items()
    stages = {key: float(entry.get("seconds", 0.0)) for key, entry in entries}
    if stages:
        slowest = max(stages, key=lambda key: stages[key])
        attempts = sum(int(entry.get("attempts", 1)) for _, entry in entries)
        retried = sum(1 for _, entry in entries if int(entry.get("attempts", 1)) > 1)
        again = f", {retried} of them run more than once ({attempts} attempts in all)" if retried else ""
        lines.append(
            f"time: {sum(stages.values()) / 60:.1f} min in {len(stages)} stages, every attempt counted{again}; "
            f"the longest {slowest} ({stages[slowest]:.0f} s); instructor: {tokens:,} tokens writing samples, ${cost:.4f}"
        )
    files = [name for name in ("report.md", "report.html") if (run_dir / name).exists()]
    if files:
        lines.append("open: " + ", ".join(str(run_dir / name) for name in files))
    return Group(_scores(summaries, change_tests(run_dir)), *(Text(line) for line in lines))
