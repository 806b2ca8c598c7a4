"""Small statistics the reports share (markdown now, HTML later)."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion: ``successes`` of ``n``; None when n == 0.

    Unlike the textbook p +- z*sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at
    0 of n or n of n, which is where fix rates on a few dozen errors often land:

        centre    = (p + z^2 / 2n) / (1 + z^2 / n)
        halfwidth = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    (Wilson, 1927; Brown, Cai & DasGupta, 2001, recommend it for small n.)
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Clamp away floating-point dust (e.g. -1e-17 at 0 of n).
    return max(0.0, centre - half), min(1.0, centre + half)


def format_interval(successes: int, n: int) -> str:
    """``"24-76%"``: the 95% Wilson interval in whole percent, "-" when n == 0."""
    interval = wilson_interval(successes, n)
    if interval is None:
        return "-"
    low, high = interval
    return f"{100 * low:.0f}-{100 * high:.0f}%"
