"""Is a change in score more than noise? The paired test, read from a run's per-item records.

Every evaluation writes one record per benchmark item (``iter_k/eval/*.jsonl``), and
every iteration answers the same items, so two scores of one benchmark are a paired
comparison: McNemar's exact test (:func:`lai.report.stats.mcnemar_exact`) on the items
that changed says whether the change is distinguishable from noise. Shared by the
terminal summary, ``report.md``, ``report.html``, the dataset card and ``lai compare``,
so all five say the same words about the same numbers.
"""

from __future__ import annotations

from pathlib import Path

from lai.report.stats import ALPHA, PAIRED_TEST, PairedTest, format_p, paired_test
from lai.report.vocabulary import change_points, points_text
from lai.store import RunStore, eval_file, load_summaries, read_jsonl

#: Said once wherever verdicts appear, so "distinguishable from noise" has one meaning.
VERDICT_NOTE = (
    f"*Distinguishable from noise* means {PAIRED_TEST} on the per-item outcomes of the same "
    f"benchmark items gives p < {ALPHA}: of the items whose outcome changed, too many changed one "
    "way for chance. It does not say the gain is large, and *not distinguishable* does not mean "
    "there was no effect, only that these items cannot show one."
)


def outcomes(run_dir: Path, k: int, bench: str) -> dict[str, bool] | None:
    """id -> right, for every item of benchmark ``bench`` evaluated at iteration ``k``; None without records."""
    path = RunStore(Path(run_dir)).path(k, eval_file(bench))
    if not path.exists():
        return None
    return {str(row["id"]): bool(row.get("correct")) for row in read_jsonl(path) if "id" in row}


def change_test(run_dir: Path, k: int, bench: str, against: int = 0) -> PairedTest | None:
    """Iteration ``k`` against iteration ``against`` (the starting model) on one benchmark."""
    if k == against:
        return None
    before, after = outcomes(run_dir, against, bench), outcomes(run_dir, k, bench)
    if before is None or after is None:
        return None
    return paired_test(before, after)


def change_tests(run_dir: Path) -> dict[tuple[int, str], PairedTest]:
    """Every evaluated iteration k > 0 against iteration 0, per benchmark, where both have records."""
    run_dir = Path(run_dir)
    tests = {}
    for k, stages in sorted(load_summaries(run_dir).items()):
        if k == 0:
            continue
        for bench in (stages.get("evaluate") or {}).get("scores", {}):
            test = change_test(run_dir, k, bench)
            if test is not None:
                tests[(k, bench)] = test
    return tests


def verdict_cell(test: PairedTest | None) -> str:
    """A table cell: the verdict and its p-value, "-" where there is nothing to compare."""
    return "-" if test is None else f"{test.verdict} (p = {format_p(test.p_value)})"


def verdict_lines(tests: dict[tuple[int, str], PairedTest]) -> list[str]:
    """One sentence per (iteration, benchmark): the change in points and whether it is noise."""
    lines = []
    for (k, bench), test in sorted(tests.items()):
        before, after = test.before / test.items, test.after / test.items
        lines.append(
            f"{bench}, iteration {k} vs 0: {test.before}/{test.items} -> {test.after}/{test.items} "
            f"({points_text(change_points(after, before))} points), {test.sentence()}."
        )
    return lines
