"""Greedy decoding with continuous batching: a finished row's slot goes to the next prompt.

Why not ``model.generate``: it runs a batch until its *last* row stops, so one answer
that runs to the token limit holds every slot of its batch for the full length. On a
CPU a decoding step costs about the same for 2 rows as for 8 (reading the weights
dominates), so empty slots are pure waste. Here a row leaves as soon as it emits an
end-of-sequence token or one of its stop strings, and waiting prompts are prefilled and
merged into the running batch, so the batch stays full until the queue is empty.

Rows are laid out as ``[pads][shared prefix][pads][own tokens][generated...]`` in one
KV cache; positions come from each row's own count of real tokens, so padding shifts
nothing and each row decodes as it would alone, up to floating-point ties. Greedy only
(argmax, no logits processors): that is all collection and evaluation use.

This works on transformers' ``DynamicCache`` of plain ``DynamicLayer`` layers (full
attention, as in Llama-style models); :func:`supports_continuous` tells the backend when
to fall back to one batch at a time.

Admission is bounded twice: at most ``batch_size`` rows, and at most ``max_batch_tokens``
padded tokens, counted as rows x (longest prompt among them + ``max_new_tokens``), an
upper bound on the KV cache the batch can grow to (columns no row attends to any more are
trimmed, so a row's footprint never exceeds its prompt plus its new tokens).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from lai.targets.batching import rows_that_fit

STOP_TAIL_TOKENS = 16  # a stop string is looked for in the last few decoded tokens


def stop_tail(stop: Sequence[str]) -> int:
    """How many trailing tokens to decode to see any stop string whole.

    A token decodes to at least one character except byte-fallback pieces (up to 4 per
    character), so 4 tokens a character, plus one for a token that starts before it.
    """
    return max(STOP_TAIL_TOKENS, 4 * max((len(s) for s in stop), default=0) + 1)


def hits_stop(tokenizer: Any, generated: Sequence[int], stop: Sequence[str], tail: int) -> bool:
    """Whether the generated tokens (never the prompt, as in lm-eval) contain a stop string."""
    text = tokenizer.decode(list(generated[-tail:]), skip_special_tokens=True)
    return any(marker in text for marker in stop)


def generated_stop_criteria(tokenizer: Any, stop: Sequence[str], prompt_width: int) -> Any:
    """A ``model.generate`` stopping criterion: a row is done once its *generated* text holds
    a stop string. transformers' ``stop_strings`` also matches across the end of the prompt
    (a prompt ending in "Q" and a first token ":" stop at once on "Q:"), which lm-eval's
    per-row check and the continuous path do not.
    """
    import torch
    from transformers import StoppingCriteria

    markers, tail = list(stop), stop_tail(stop)

    class GeneratedStopStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            start = max(prompt_width, input_ids.shape[1] - tail)
            done = [hits_stop(tokenizer, row[start:].tolist(), markers, tail) for row in input_ids]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return GeneratedStopStrings()


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids


def supports_continuous(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _pad_left(cache: Any, n: int) -> None:
    import torch.nn.functional as F  # noqa: N812

    for layer in cache.layers:
        layer.keys = F.pad(layer.keys, (0, 0, n, 0))
        layer.values = F.pad(layer.values, (0, 0, n, 0))


def _trim_left(cache: Any, n: int) -> None:
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, n:, :]
        layer.values = layer.values[:, :, n:, :]


def _concat(cache: Any, other: Any) -> None:
    import torch

    for layer, extra in zip(cache.layers, other.layers, strict=True):
        layer.keys = torch.cat([layer.keys, extra.keys], dim=0)
        layer.values = torch.cat([layer.values, extra.values], dim=0)


class _Batch:
    """The running batch: rows, their KV cache, attention mask, next positions and tokens."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cache: Any = None
        self.mask: Any = None
        self.positions: Any = None
        self.tokens: Any = None

    def merge(self, rows: list[int], cache: Any, mask: Any, positions: Any, tokens: Any) -> None:
        import torch
        import torch.nn.functional as F  # noqa: N812

        if not self.rows:
            self.rows, self.cache, self.mask, self.positions, self.tokens = rows, cache, mask, positions, tokens
            return
        width, other = self.mask.shape[1], mask.shape[1]
        if width < other:
            _pad_left(self.cache, other - width)
            self.mask = F.pad(self.mask, (other - width, 0))
        elif other < width:
            _pad_left(cache, width - other)
            mask = F.pad(mask, (width - other, 0))
        _concat(self.cache, cache)
        self.mask = torch.cat([self.mask, mask])
        self.positions = torch.cat([self.positions, positions])
        self.tokens = torch.cat([self.tokens, tokens])
        self.rows = self.rows + rows

    def keep(self, slots: list[int]) -> None:
        import torch

        index = torch.tensor(slots, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.tokens = self.mask[index], self.positions[index], self.tokens[index]
        self.rows = [self.rows[s] for s in slots]
        # Columns no remaining row attends to (left behind by rows that left) are dropped.
        unused = int(self.mask.any(dim=0).long().argmax()) if self.rows else 0
        if unused:
            _trim_left(self.cache, unused)
            self.mask = self.mask[:, unused:]


def continuous_greedy(
    model: Any,
    tokenizer: Any,
    rows: list[list[int]],
    *,
    order: list[int],
    pad: Callable[[list[list[int]]], tuple[Any, Any]],
    new_cache: Callable[[int], Any],
    cached_tokens: int,
    cache_argument: str,
    batch_size: int,
    max_new_tokens: int,
    stop: Sequence[str] = (),
    device: str = "cpu",
    max_batch_tokens: int | None = None,
    prefill_kwargs: dict[str, Any] | None = None,
    record: Callable[[list[int], int], None] | None = None,
    done: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Generate for every row in ``rows`` (token ids); return each row's new token ids.

    ``pad`` lays out a group of rows (shared prefix, pads, own tokens); ``new_cache(k)``
    returns a cache for k rows already holding the shared prefix (``cached_tokens`` long).
    ``order`` is the admission order (longest first keeps padding low). ``record``, if
    given, sees the running rows and their padded-token footprint after each admission;
    ``done``, if given, is called with the number of rows that finished at each step.
    """
    import torch

    stops = eos_ids(model, tokenizer)
    tail = stop_tail(stop)
    budget = max_batch_tokens or float("inf")
    lengths = [len(r) for r in rows]
    queue = deque(order)
    generated: list[list[int]] = [[] for _ in rows]
    batch = _Batch()
    with torch.inference_mode():
        while queue or batch.rows:
            width = max([lengths[r] for r in batch.rows] + [lengths[queue[0]]]) if queue else 0
            # The rows the budget holds at this width; without a budget, batch_size.
            capacity = rows_that_fit(width, max_new_tokens, max_batch_tokens, batch_size) if max_batch_tokens else batch_size
            free = capacity - len(batch.rows)
            admit_at = max(1, capacity // 4)  # admit in groups: prefill is cheaper batched
            if queue and (free >= admit_at or not batch.rows):
                group = [queue.popleft()]
                while queue and len(group) < free:
                    wider = max(width, lengths[queue[0]])
                    if (len(batch.rows) + len(group) + 1) * (wider + max_new_tokens) > budget:
                        break
                    width = wider
                    group.append(queue.popleft())
                ids, mask = pad([rows[i] for i in group])
                ids, mask = ids.to(device), mask.to(device)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                cache = new_cache(len(group))
                logits = model(
                    input_ids=ids[:, cached_tokens:],
                    attention_mask=mask,
                    position_ids=positions[:, cached_tokens:],
                    use_cache=True,
                    **{cache_argument: cache},
                    **(prefill_kwargs or {}),
                ).logits[:, -1, :]
                batch.merge(group, cache, mask, positions[:, -1] + 1, logits.argmax(dim=-1))
                if record is not None:
                    record(list(batch.rows), len(batch.rows) * (width + max_new_tokens))

            keep = []
            for slot, row in enumerate(batch.rows):
                token = int(batch.tokens[slot])
                generated[row].append(token)
                finished = token in stops or len(generated[row]) >= max_new_tokens
                if not finished and stop:
                    finished = hits_stop(tokenizer, generated[row], stop, tail)
                if not finished:
                    keep.append(slot)
            if len(keep) < len(batch.rows):
                if done is not None:
                    done(len(batch.rows) - len(keep))
                if not keep:
                    batch = _Batch()
                    continue
                batch.keep(keep)

            batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
            logits = model(
                input_ids=batch.tokens[:, None],
                attention_mask=batch.mask,
                position_ids=batch.positions[:, None],
                use_cache=True,
                **{cache_argument: batch.cache},
            ).logits[:, -1, :]
            batch.tokens = logits.argmax(dim=-1)
            batch.positions = batch.positions + 1
    return generated


def select_rows(cache: Any, index: Any) -> Any:
    """A new cache holding rows ``index`` of ``cache`` (repeats allowed); ``cache`` is untouched.

    Used to give each continuation of a log-likelihood request its context's KV cache.
    """
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(index)
    return selected


def repeat_cache(prefix_cache: Any) -> Callable[[int], Any]:
    """A ``new_cache`` factory: copies of the shared-prefix cache, one per row."""

    def build(rows: int) -> Any:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        return cache

    return build
