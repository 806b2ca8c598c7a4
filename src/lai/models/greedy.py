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
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

STOP_TAIL_TOKENS = 16  # a stop string is looked for in the last few decoded tokens


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
) -> list[list[int]]:
    """Generate for every row in ``rows`` (token ids); return each row's new token ids.

    ``pad`` lays out a group of rows (shared prefix, pads, own tokens); ``new_cache(k)``
    returns a cache for k rows already holding the shared prefix (``cached_tokens`` long).
    """
    import torch

    stops = eos_ids(model, tokenizer)
    queue = deque(order)
    generated: list[list[int]] = [[] for _ in rows]
    batch = _Batch()
    admit_at = max(1, batch_size // 4)  # admit in groups: prefill is cheaper batched
    with torch.inference_mode():
        while queue or batch.rows:
            free = batch_size - len(batch.rows)
            if queue and (free >= admit_at or not batch.rows):
                group = [queue.popleft() for _ in range(min(free, len(queue)))]
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
                ).logits[:, -1, :]
                batch.merge(group, cache, mask, positions[:, -1] + 1, logits.argmax(dim=-1))

            keep = []
            for slot, row in enumerate(batch.rows):
                token = int(batch.tokens[slot])
                generated[row].append(token)
                finished = token in stops or len(generated[row]) >= max_new_tokens
                if not finished and stop:
                    tail = tokenizer.decode(generated[row][-STOP_TAIL_TOKENS:], skip_special_tokens=True)
                    finished = any(marker in tail for marker in stop)
                if not finished:
                    keep.append(slot)
            if len(keep) < len(batch.rows):
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


def repeat_cache(prefix_cache: Any) -> Callable[[int], Any]:
    """A ``new_cache`` factory: copies of the shared-prefix cache, one per row."""

    def build(rows: int) -> Any:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        return cache

    return build
