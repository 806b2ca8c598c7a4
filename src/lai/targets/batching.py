"""Grouping requests into batches by a token budget instead of a fixed row count.

A batch's cost in memory (KV cache, activations) and, on a CPU, in time grows with its
padded size: rows x (longest row + tokens still to come). A fixed row count is either
too small for short prompts or too large for long ones; a budget on padded tokens adapts.
The row count stays capped by ``max_rows`` (the configured batch size).

Requests are sorted longest first (ties keep their input order) so rows of a batch have
similar lengths and little padding; the caller maps results back to the input order.
A single request larger than the budget still runs, alone.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Default token budget per forward pass: rows x (prompt + new tokens) for generation,
#: rows x padded width for log-likelihood. From measurements of SmolLM2-135M on a 2-core
#: CPU (bench/README.md, "lai eval throughput"): decoding throughput still rises at 32 rows
#: of 1,300 tokens, a prefill pass gains nothing past a few hundred tokens; 32k tokens keep
#: lai's default batches unbounded (16 rows of the ~1,100-token 8-shot GSM8K prompt with
#: 256 new tokens are 17.5k) and cap the KV cache (~1.5 GB for SmolLM2, ~16 GB for a bf16
#: 7B Llama). The row count stays capped by ``batch_size``.
DEFAULT_MAX_BATCH_TOKENS = 32768


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by decreasing length; equal lengths keep their input order."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def rows_that_fit(width: int, extra: int, max_tokens: int, max_rows: int) -> int:
    """How many rows of ``width`` tokens (plus ``extra`` to come) the budget holds, at least 1."""
    return max(1, min(max_rows, max_tokens // max(width + extra, 1)))


def budget_batches(
    order: Sequence[int],
    lengths: Sequence[int],
    *,
    max_tokens: int,
    max_rows: int,
    extra: int = 0,
) -> list[list[int]]:
    """Split ``order`` into consecutive batches with rows x (longest + extra) <= max_tokens.

    ``order`` is usually :func:`longest_first`, so each batch's first row sets its width;
    any order works (the width is tracked as rows are added).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for index in order:
        wider = max(width, lengths[index])
        if current and (len(current) + 1 > max_rows or (len(current) + 1) * (wider + extra) > max_tokens):
            batches.append(current)
            current, wider = [], lengths[index]
        current.append(index)
        width = wider
    if current:
        batches.append(current)
    return batches


def padded_tokens(batch: Sequence[int], lengths: Sequence[int], extra: int = 0) -> int:
    """The padded size of a batch: rows x (longest + extra)."""
    return len(batch) * (max(lengths[i] for i in batch) + extra) if batch else 0
