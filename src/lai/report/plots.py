"""Plots for report.html, rendered by matplotlib to SVG text.

Each function returns an SVG document as a string; the page embeds it as a data URI
image, so every figure keeps its own SVG ids and the page needs no network to show it.
matplotlib runs on its non-interactive Agg/SVG backends (no display needed) and with a
fixed hash salt, so the same run gives byte-identical plots.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from lai.report.stats import wilson_interval

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


@dataclass(frozen=True)
class Point:
    iteration: int
    correct: int
    n: int

    @property
    def score(self) -> float:
        return self.correct / self.n if self.n else 0.0


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede the pyplot import
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "lai", "svg.fonttype": "none", "font.size": 10})
    return plt


def _svg(fig) -> str:  # type: ignore[no-untyped-def]
    plt = _pyplot()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buffer.getvalue()


def score_lines(series: dict[str, Sequence[Point]], title: str) -> str:
    """Score per iteration, one line per series, with 95 % Wilson intervals as error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    offsets = len(series)
    for index, (label, points) in enumerate(series.items()):
        points = sorted(points, key=lambda p: p.iteration)
        # Several runs share the axis: nudge each sideways so their error bars stay apart.
        shift = (index - (offsets - 1) / 2) * 0.06 if offsets > 1 else 0.0
        xs = [p.iteration + shift for p in points]
        ys = [100 * p.score for p in points]
        low, high = [], []
        for p, y in zip(points, ys, strict=True):
            interval = wilson_interval(p.correct, p.n) or (p.score, p.score)
            low.append(max(0.0, y - 100 * interval[0]))  # max: floating-point dust
            high.append(max(0.0, 100 * interval[1] - y))
        colour = COLOURS[index % len(COLOURS)]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, color=colour, label=label)
    iterations = sorted({p.iteration for points in series.values() for p in points})
    ax.set_xticks(iterations)
    ax.set_xlabel("iteration (0 = starting model)")
    ax.set_ylabel("score, % (95 % interval)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="best")
    return _svg(fig)


def _hbars(items: Sequence[tuple[str, float]], title: str, colour: str, labels: list[str], xlabel: str = "") -> str:
    """Horizontal bars, first item on top, each labelled at its end."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 0.4 * len(items) + 0.9))
    bars = ax.barh([label for label, _ in items][::-1], [value for _, value in items][::-1], color=colour)
    ax.bar_label(bars, labels=labels[::-1], padding=3, fontsize=8)
    ax.set_xlim(0, max([value for _, value in items] + [1]) * 1.2)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def funnel_bars(stages: Sequence[tuple[str, int]], title: str) -> str:
    """How many errors, requests, samples survive each step."""
    return _hbars(stages, title, "#2563eb", [str(value) for _, value in stages])


def rate_bars(groups: Sequence[tuple[str, int, int]], title: str) -> str:
    """Bars of fixed / n per group with 95 % Wilson intervals (fix rate)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    names = [f"{name}\n(n = {n})" for name, _, n in groups]
    rates = [100 * fixed / n if n else 0.0 for _, fixed, n in groups]
    low, high = [], []
    for (_, fixed, n), rate in zip(groups, rates, strict=True):
        interval = wilson_interval(fixed, n)
        low.append(max(0.0, rate - 100 * interval[0]) if interval else 0.0)
        high.append(max(0.0, 100 * interval[1] - rate) if interval else 0.0)
    ax.bar(names, rates, yerr=[low, high], capsize=4, color=[COLOURS[i % len(COLOURS)] for i in range(len(groups))])
    ax.set_ylabel("fixed after training, % (95 % interval)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def duration_bars(durations: Sequence[tuple[str, float]], title: str) -> str:
    """Wall seconds per stage."""
    return _hbars(durations, title, "#16a34a", [f"{value:.0f} s" for _, value in durations], "wall seconds")
