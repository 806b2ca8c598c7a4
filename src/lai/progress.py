"""Progress reporting without printing: the pipeline calls these hooks, the CLI draws bars.

A stage's bar starts with what was already on disk (``advance`` before any work), then
moves once per item: answering calls :func:`row_ticker`'s tick as each row of a batch
finishes, not once per batch, so the rate is measured while a batch is still running.
``note`` adds a short status after the label (a training loss, a server's state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class StageProgress(Protocol):
    def advance(self, n: int = 1) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


class Progress(Protocol):
    def start(self, label: str, total: int | None) -> StageProgress: ...


class _NullStage:
    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def start(self, label: str, total: int | None) -> StageProgress:
        return _NullStage()


def note(bar: Any, text: str) -> None:
    """``bar.note(text)`` for bars that have it (a caller's own Progress may predate ``note``)."""
    method = getattr(bar, "note", None)
    if method is not None:
        method(text)


class RowTicker:
    """Per-row ticks inside a batch, reconciled with the batch's records when it is written.

    The target calls :meth:`tick` as rows finish; :meth:`batch_written` then advances by
    whatever the ticks did not cover (all of it, for a target that never ticks), so the
    bar always ends on the number of records on disk.
    """

    def __init__(self, bar: StageProgress) -> None:
        self.bar = bar
        self.ticked = 0

    def tick(self, n: int = 1) -> None:
        self.ticked += n
        self.bar.advance(n)

    def batch_written(self, rows: int) -> None:
        if rows > self.ticked:
            self.bar.advance(rows - self.ticked)
        self.ticked = 0


RowHook = Callable[[int], None]


def describe_done(name: str, summary: dict[str, Any]) -> str:
    """What a finished stage left on disk, in a few words, for the line a resumed run prints."""
    scores = summary.get("scores")
    if name == "evaluate" and isinstance(scores, dict):
        return ", ".join(f"{bench} {r.get('correct', '?')}/{r.get('n', '?')}" for bench, r in scores.items())
    words = {
        "select": ("selected", "questions selected"),
        "collect": ("wrong", "errors"),
        "instruct": ("requests", "requests answered"),
        "parse": ("kept", "kept after parse"),
        "verify": ("kept", "kept after verify"),
        "train": ("examples", "examples trained on"),
    }
    if name == "collect" and "n" in summary:
        return f"{summary.get('wrong', '?')} errors in {summary['n']} answers"
    if name == "retest":
        targeted = summary.get("targeted") or {}
        return f"targeted errors fixed {targeted.get('fixed', '?')}/{targeted.get('n', '?')}"
    if name == "instruct" and "direct_samples" in summary:
        return f"{summary['direct_samples']} real rows"
    key, label = words.get(name, ("", ""))
    return f"{summary[key]} {label}" if key in summary else "finished"
