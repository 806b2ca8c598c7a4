"""A client-side limiter for requests per minute (RPM) and tokens per minute (TPM).

Hosted endpoints limit both dimensions, and a 429 costs a round trip plus a back-off, so
the instruct stage paces itself below the limits instead of discovering them. It is
hand-written on purpose: ``aiolimiter`` is a leaky bucket for a single dimension,
``limits``/``pyrate-limiter`` are synchronous or storage-oriented, and no small, well-kept
asyncio library paces RPM and TPM together and corrects the token estimate afterwards.

Two token buckets refill continuously at ``limit / 60`` per second. Their capacity is
``burst_s`` seconds of the limit, so the limiter never fires a whole minute's quota at
once (servers enforce limits at sub-minute granularity). A request larger than the token
bucket's capacity may still go when the bucket is full: the bucket then runs into debt,
which later requests repay by waiting. Waiters are served in FIFO order (one lock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


def estimate_tokens(messages: list[dict[str, str]], max_tokens: int) -> int:
    """Upper-ish estimate of a request's tokens before sending: prompt chars / 4 + max_tokens."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + max_tokens


@dataclass
class _Bucket:
    rate_per_s: float
    capacity: float
    level: float

    def refill(self, elapsed: float) -> None:
        self.level = min(self.capacity, self.level + elapsed * self.rate_per_s)

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (above capacity: wait for a full bucket)."""
        needed = min(amount, self.capacity)
        if self.level >= needed:
            return 0.0
        return (needed - self.level) / self.rate_per_s


class RateLimiter:
    """Paces requests below ``rpm`` requests and ``tpm`` tokens per minute (either may be None)."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._sleep = sleep
        self._requests = self._bucket(rpm, burst_s)
        self._tokens = self._bucket(tpm, burst_s)
        self._last = clock()
        # Created lazily so the limiter can be built outside the event loop that uses it.
        self._lock: asyncio.Lock | None = None

    @staticmethod
    def _bucket(per_minute: float | None, burst_s: float) -> _Bucket | None:
        if not per_minute:
            return None
        rate = per_minute / 60.0
        capacity = max(1.0, rate * burst_s)
        return _Bucket(rate_per_s=rate, capacity=capacity, level=capacity)

    def _refill(self) -> None:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(elapsed)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request of about ``tokens`` tokens may be sent, and book it."""
        if self._requests is None and self._tokens is None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        # Holding the lock while sleeping keeps the order fair: the first waiter goes first,
        # and a big request is not starved by a stream of small ones.
        async with self._lock:
            while True:
                self._refill()
                delay = max(
                    self._requests.wait_for(1) if self._requests else 0.0,
                    self._tokens.wait_for(tokens) if self._tokens else 0.0,
                )
                if delay <= 0:
                    break
                await self._sleep(delay)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token booking with the usage the reply reports (refund or charge)."""
        if self._tokens is None:
            return
        self._refill()
        self._tokens.level = min(self._tokens.capacity, self._tokens.level + estimated - actual)
