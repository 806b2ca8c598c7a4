"""Small statistics the reports share: intervals for one proportion, a paired test for a change."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


#: Below this p-value a paired change is called distinguishable from noise.
ALPHA = 0.05
PAIRED_TEST = "McNemar's exact test"


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided p-value of McNemar's exact test on the discordant pairs of a paired comparison.

    Both scores come from the *same* items, so the question is not whether two
    proportions differ but whether the items that changed changed more one way than the
    other: ``gained`` items wrong before and right after, ``lost`` right before and wrong
    after. Under no effect each discordant item is a fair coin, so the p-value is the
    two-sided binomial test of ``min(gained, lost)`` in ``gained + lost`` at 1/2
    (McNemar, 1947; the exact form, as Fagerland et al., 2013, recommend for few
    discordant pairs). Items right or wrong both times carry no information.
    Written out rather than importing scipy for a sum of binomial coefficients.
    """
    if gained < 0 or lost < 0:
        raise ValueError(f"counts must be >= 0, got {gained}, {lost}")
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class PairedTest:
    """Per-item outcomes of the same items under two models, and what they say."""

    items: int  # items present in both
    before: int  # right under the first model
    after: int  # right under the second
    gained: int  # wrong before, right after
    lost: int  # right before, wrong after

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.gained, self.lost)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def verdict(self) -> str:
        """"distinguishable from noise" or "not distinguishable from noise"."""
        return "distinguishable from noise" if self.significant else "not distinguishable from noise"

    def sentence(self) -> str:
        """The verdict with its evidence, one clause: what a reader needs to check it."""
        return (
            f"{self.verdict} ({PAIRED_TEST}, p = {format_p(self.p_value)}: "
            f"{self.gained} item(s) gained, {self.lost} lost of {self.items})"
        )


def paired_test(before: dict[str, bool], after: dict[str, bool]) -> PairedTest | None:
    """The paired comparison of two per-item outcome maps (id -> right), on their common ids."""
    common = sorted(set(before) & set(after))
    if not common:
        return None
    return PairedTest(
        items=len(common),
        before=sum(before[i] for i in common),
        after=sum(after[i] for i in common),
        gained=sum(after[i] and not before[i] for i in common),
        lost=sum(before[i] and not after[i] for i in common),
    )


def format_p(p: float) -> str:
    """Two significant figures, and "< 0.001" below that: more digits would be false precision."""
    return "< 0.001" if p < 0.001 else f"{p:.2g}"
