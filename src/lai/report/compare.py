"""Runs side by side: ``lai compare RUN_DIR [RUN_DIR ...]``.

One row per run: its strategy, how far it got, how many samples it trained on, the score
on every benchmark at its last evaluated iteration with the change from its own
iteration 0, the fix rate of targeted vs control errors, and what the instructor cost;
then, for every pair of runs, whether their difference on each benchmark is
distinguishable from noise (McNemar's exact test on the items both answered).
Built only from the run directories, like ``report.md``; :func:`compare_runs` gives the
rows as data and :func:`comparison_table` as strings, so the terminal (rich), markdown
and HTML renderers share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lai.report.paired import VERDICT_NOTE, outcomes, verdict_cell
from lai.report.stats import PairedTest, paired_test
from lai.report.vocabulary import (
    change_points,
    markdown_table,
    points_text,
    resolve_usage,
    strategy_label,
)
from lai.store import RunStore, load_summaries, read_json, require_run_dir, saved_config


@dataclass(frozen=True)
class BenchmarkScore:
    score: float
    correct: int
    n: int
    iteration: int
    baseline: float | None = None  # the same benchmark at iteration 0

    @property
    def delta(self) -> float | None:
        """Change from iteration 0 in points (3.0 = 3 points); None without a baseline."""
        return None if self.baseline is None or self.iteration == 0 else change_points(self.score, self.baseline)


@dataclass(frozen=True)
class FixGroup:
    n: int
    fixed: int

    @property
    def rate(self) -> float | None:
        return self.fixed / self.n if self.n else None


@dataclass(frozen=True)
class RunRow:
    run_dir: Path
    name: str
    strategy: str  # the config's strategy.name
    strategy_label: str  # with the settings that matter: "mix (alternate, k=2)"
    iterations: int  # iterations (k >= 1) evaluated
    planned: int | None  # config.iterations
    trained_on: int  # sum of train.done "examples" over iterations
    scores: dict[str, BenchmarkScore] = field(default_factory=dict)
    fix_iteration: int | None = None
    targeted: FixGroup | None = None
    control: FixGroup | None = None
    cost_usd: float | None = None  # None: the instructor was never asked (direct baselines)


def _scores(store: RunStore, k: int, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Iteration ``k``'s scores: ``eval.json``, else the evaluate stage's summary."""
    data = read_json(store.path(k, "eval.json"), default=None)
    if isinstance(data, dict) and isinstance(data.get("scores"), dict):
        return data["scores"]
    scores = (summary.get("evaluate") or {}).get("scores")
    return scores if isinstance(scores, dict) else None


def _group(summary: dict[str, Any], name: str) -> FixGroup | None:
    group = summary.get(name)
    return FixGroup(int(group.get("n", 0)), int(group.get("fixed", 0))) if isinstance(group, dict) else None


def summarize_run(run_dir: Path) -> RunRow:
    run_dir = Path(run_dir)
    require_run_dir(run_dir)
    store = RunStore(run_dir)
    config = saved_config(run_dir)
    strategy = config.get("strategy") or {}
    summaries = load_summaries(run_dir)

    evaluated = {k: scores for k in sorted(summaries) if (scores := _scores(store, k, summaries[k])) is not None}
    last = max(evaluated) if evaluated else None
    baseline = evaluated.get(0, {})
    scores = {}
    if last is not None:
        for bench, result in evaluated[last].items():
            base = baseline.get(bench)
            scores[bench] = BenchmarkScore(
                score=float(result["score"]), correct=int(result.get("correct", 0)), n=int(result.get("n", 0)),
                iteration=last, baseline=None if base is None else float(base["score"]),
            )  # fmt: skip

    retested = [k for k in sorted(summaries) if "retest" in summaries[k]]
    fix_iteration = retested[-1] if retested else None
    retest = summaries[fix_iteration]["retest"] if fix_iteration is not None else {}

    prices = (config.get("instructor") or {}).get("prices") or {}
    cost, asked = 0.0, False
    for k, s in sorted(summaries.items()):
        instruct = s.get("instruct") or {}
        if "cost_usd" in instruct:
            cost += float(instruct["cost_usd"])
            asked = True
        usage = resolve_usage(store, k, prices) if k > 0 else None
        if usage and usage["ok"] + usage["failed"]:
            cost += usage["cost_usd"]
            asked = True

    return RunRow(
        run_dir=run_dir,
        name=str(config.get("name") or run_dir.name),
        strategy=str(strategy.get("name", "le")),
        strategy_label=strategy_label(strategy),
        iterations=sum(1 for k in evaluated if k > 0),
        planned=config.get("iterations"),
        trained_on=sum(int((s.get("train") or {}).get("examples", 0)) for s in summaries.values()),
        scores=scores,
        fix_iteration=fix_iteration,
        targeted=_group(retest, "targeted"),
        control=_group(retest, "control"),
        cost_usd=round(cost, 6) if asked else None,
    )


def compare_runs(run_dirs: Iterable[Path]) -> list[RunRow]:
    """One row per run, in the order given; every path is checked before any is read."""
    run_dirs = [Path(p) for p in run_dirs]
    for run_dir in run_dirs:
        require_run_dir(run_dir)
    return [summarize_run(run_dir) for run_dir in run_dirs]


def benchmarks(rows: Sequence[RunRow]) -> list[str]:
    """Every benchmark of any run, in order of first appearance."""
    return list(dict.fromkeys(bench for row in rows for bench in row.scores))


def _score_cell(score: BenchmarkScore | None) -> str:
    if score is None:
        return "-"
    text = f"{100 * score.score:.1f}%"
    return text if score.delta is None else f"{text} ({points_text(score.delta)})"


def _fix_cell(group: FixGroup | None) -> str:
    if group is None or not group.n:
        return "-"
    return f"{group.fixed}/{group.n} ({100 * group.fixed / group.n:.0f}%)"


def _names(rows: Sequence[RunRow]) -> list[str]:
    """Run names, with the folder added where two runs share a config name."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.name] = counts.get(row.name, 0) + 1
    return [f"{row.name} ({row.run_dir.name})" if counts[row.name] > 1 else row.name for row in rows]


def comparison_table(rows: Sequence[RunRow]) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cells) shared by the terminal, markdown and HTML renderers."""
    benches = benchmarks(rows)
    header = ["run", "strategy", "iterations", "trained on", *benches, "fixed: targeted", "fixed: control", "instructor cost"]
    cells = []
    for name, row in zip(_names(rows), rows, strict=True):
        iterations = str(row.iterations)
        if row.planned is not None and row.planned != row.iterations:
            iterations += f" of {row.planned}"
        cells.append(
            [
                name,
                row.strategy_label,
                iterations,
                str(row.trained_on),
                *(_score_cell(row.scores.get(bench)) for bench in benches),
                _fix_cell(row.targeted),
                _fix_cell(row.control),
                "none" if row.cost_usd is None else f"${row.cost_usd:.4f}",
            ]
        )
    return header, cells


@dataclass(frozen=True)
class PairRow:
    """Two runs on one benchmark: the paired test on the items both evaluated."""

    first: str
    second: str
    benchmark: str
    test: PairedTest


def pair_tests(rows: Sequence[RunRow]) -> list[PairRow]:
    """Every pair of runs, on every benchmark both evaluated, at each run's last evaluated iteration.

    Runs of one config answer the same benchmark items, so their difference is a paired
    comparison: the per-item records say which items one run gets right and the other
    wrong, and McNemar's exact test says whether that is more than noise.
    """
    names = _names(rows)
    pairs = []
    for i, first in enumerate(rows):
        for j in range(i + 1, len(rows)):
            second = rows[j]
            for bench in benchmarks(rows):
                a, b = first.scores.get(bench), second.scores.get(bench)
                if a is None or b is None:
                    continue
                before = outcomes(first.run_dir, a.iteration, bench)
                after = outcomes(second.run_dir, b.iteration, bench)
                test = paired_test(before, after) if before is not None and after is not None else None
                if test is not None:
                    pairs.append(PairRow(names[i], names[j], bench, test))
    return pairs


def pairs_table(pairs: Sequence[PairRow]) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cells) of :func:`pair_tests`, for every renderer."""
    header = ["run A", "run B", "benchmark", "items", "A right", "B right", "only A right", "only B right", "paired test"]
    cells = [
        [p.first, p.second, p.benchmark, str(p.test.items), str(p.test.before), str(p.test.after),
         str(p.test.lost), str(p.test.gained), verdict_cell(p.test)]  # fmt: skip
        for p in pairs
    ]
    return header, cells


NOTES = """\
Scores are at each run's last evaluated iteration, with the change from that run's own
iteration 0 in points. *Trained on* sums the samples of every iteration's training set.
*Fixed* is the fix rate at the last retested iteration: errors the trained model now
answers right, of the errors with a kept sample (targeted) and of those held back from
the strategy (control); `lai report` shows their 95% intervals. The instructor cost
covers writing samples and re-solving them, priced with `instructor.prices`; `none`
means the strategy never asked the instructor.
"""


PAIRS_NOTES = (
    "Each pair of runs on each benchmark both evaluated, at each run's last evaluated iteration, "
    "on the items both answered: *only A right* and *only B right* are the items that tell them "
    "apart. " + VERDICT_NOTE
)


def render_markdown(rows: Sequence[RunRow]) -> str:
    header, cells = comparison_table(rows)
    runs = "\n".join(f"- {name}: `{row.run_dir}`" for name, row in zip(_names(rows), rows, strict=True))
    text = f"# lai compare\n\n{markdown_table(header, cells)}\n\n{NOTES}\n"
    pairs = pair_tests(rows)
    if pairs:
        text += f"## Is the difference more than noise?\n\n{markdown_table(*pairs_table(pairs))}\n\n{PAIRS_NOTES}\n\n"
    return text + f"Run directories:\n\n{runs}\n"
