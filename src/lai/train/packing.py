"""Sequence packing without cross-contamination, and token accounting for every batch.

TRL packs the tokenized examples with best-fit decreasing (``packing_strategy="bfd"``):
each pack holds whole examples, up to ``max_length`` tokens, and records their lengths
(``seq_lengths``). What keeps the packed examples from attending to each other is the
``position_ids``: they restart at 0 at every example boundary and no attention mask is
passed, and then

* FlashAttention 2/3 run their variable-length kernels on the boundaries (TRL's own
  padding-free collator flattens the whole batch into one row and passes
  ``cu_seq_lens``) — the right layout on a GPU with flash-attn installed;
* sdpa and eager (CPU, or a GPU without flash-attn): transformers (>= 4.53, here 5.x)
  finds the boundaries in ``position_ids`` (``masking_utils.find_packed_sequence_indices``)
  and builds a block-diagonal causal mask — but only when the forward runs without a KV
  cache. TRL's ``compute_loss`` passes ``use_cache=False``, so training is isolated; a
  plain ``model(...)`` call with the config's ``use_cache=True`` is NOT (the test shows
  both).

With sdpa/eager the mask is materialized, so attention costs (tokens in the row)^2.
TRL's collator puts all packs of a batch in ONE row (batch 4 x 512 tokens -> a 2048 x 2048
mask per layer, 4x the attention work of 4 rows of 512). :class:`PackedRowsCollator`
keeps each pack in its own row instead: the only padding left is the difference between
the packs of a batch, which best-fit decreasing makes small.

:func:`check_isolation` proves the property on the model being trained, before
training: the logits of an example packed after another equal its logits alone.
"""

from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")


def position_ids_for(seq_lengths: list[int]) -> list[int]:
    """0..n-1 for every packed example: ``[3, 2] -> [0, 1, 2, 0, 1]``."""
    return [i for n in seq_lengths for i in range(n)]


@dataclass
class PackedRowsCollator:
    """One bfd pack per row; positions restart per example; no attention mask.

    Labels of each example's first token are masked (they would be predicted from the
    previous example's last token), like TRL's padding-free collator does.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        rows = len(examples)
        input_ids = torch.full((rows, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((rows, width), -100, dtype=torch.long)
        position_ids = torch.zeros((rows, width), dtype=torch.long)
        for row, example in enumerate(examples):
            ids = example["input_ids"]
            n = len(ids)
            lengths = example.get("seq_lengths") or [n]
            positions = torch.tensor(position_ids_for(lengths), dtype=torch.long)
            input_ids[row, :n] = torch.tensor(ids, dtype=torch.long)
            labels[row, :n] = torch.tensor(example.get("labels", ids), dtype=torch.long)
            position_ids[row, :n] = positions
            labels[row, :n][positions == 0] = -100
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


@dataclass
class TokenCounter:
    """Wraps a trainer's collator and counts what each trained batch costs.

    ``tokens`` counts the examples' own tokens; ``slots`` the positions the model computes
    (``input_ids.numel()``), so ``1 - tokens / slots`` is the share of compute spent on
    padding. ``digests`` identify the examples this process trained on (for the
    data-parallel check that ranks see different data). A batch counts when the trainer
    runs its training step on it, not when it is collated: accelerate's data loader
    collates one batch ahead, which a run cut short by ``max_steps`` never trains on.
    """

    collator: Any
    batches: int = 0
    sequences: int = 0
    tokens: int = 0
    slots: int = 0
    loss_tokens: int = 0
    digests: list[str] = field(default_factory=list)
    pending: collections.deque = field(default_factory=collections.deque)

    @classmethod
    def attach(cls, trainer: Any) -> TokenCounter:
        """Count every batch ``trainer`` trains on (wraps its collator and training step)."""
        counter = cls(trainer.data_collator)
        trainer.data_collator = counter
        step = trainer.training_step

        def counted_step(*args: Any, **kwargs: Any) -> Any:
            counter.consume()
            return step(*args, **kwargs)

        trainer.training_step = counted_step
        return counter

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        digests, tokens, sequences = [], 0, 0
        for example in examples:
            ids = list(example["input_ids"])
            tokens += len(ids)
            start = 0
            for n in example.get("seq_lengths") or [len(ids)]:
                sequences += 1
                piece = ",".join(map(str, ids[start : start + n]))
                digests.append(hashlib.sha1(piece.encode()).hexdigest()[:12])
                start += n
        loss_tokens = int((batch["labels"] != -100).sum()) if "labels" in batch else 0
        self.pending.append((sequences, tokens, int(batch["input_ids"].numel()), loss_tokens, digests))
        return batch

    def consume(self) -> None:
        """The trainer is about to train on the oldest collated batch."""
        if not self.pending:
            return
        sequences, tokens, slots, loss_tokens, digests = self.pending.popleft()
        self.batches += 1
        self.sequences += sequences
        self.tokens += tokens
        self.slots += slots
        self.loss_tokens += loss_tokens
        self.digests += digests

    def stats(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "sequences": self.sequences,
            "tokens": self.tokens,
            "slots": self.slots,
            "loss_tokens": self.loss_tokens,
            "padding_fraction": round(1 - self.tokens / self.slots, 4) if self.slots else 0.0,
            "digests": self.digests,
        }

    def write(self, path: Path, rank: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rank": rank, **self.stats()}))


def merge_rank_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Token totals over all processes (the digests stay per rank)."""
    tokens = sum(r["tokens"] for r in rows)
    slots = sum(r["slots"] for r in rows)
    return {
        "tokens": tokens,
        "slots": slots,
        "loss_tokens": sum(r["loss_tokens"] for r in rows),
        "sequences": sum(r["sequences"] for r in rows),
        "padding_fraction": round(1 - tokens / slots, 4) if slots else 0.0,
    }


def check_isolation(model: Any, collator: Any, tolerance: float | None = None) -> float:
    """Raise ConfigError unless an example packed after another gives its logits alone.

    Runs the model the way the trainer does (no KV cache, the real collator) on two short
    made-up examples; returns the largest logit difference relative to the logits' scale.
    """
    import torch

    from lai.errors import ConfigError

    vocab = int(model.config.get_text_config().vocab_size)
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(5, vocab, (11,), generator=generator).tolist()
    second = torch.randint(5, vocab, (7,), generator=generator).tolist()
    device = next(model.parameters()).device
    packed = collator([{"input_ids": first + second, "labels": first + second, "seq_lengths": [11, 7]}])
    alone = collator([{"input_ids": second, "labels": second, "seq_lengths": [7]}])

    def logits(batch: dict[str, Any]) -> Any:
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items() if k != "labels"}
        return model(**inputs, use_cache=False).logits.float()

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            together = logits(packed)[0, 11:18]
            single = logits(alone)[0, :7]
    finally:
        model.train(was_training)
    scale = float(single.abs().max().clamp(min=1e-6))
    diff = float((together - single).abs().max()) / scale
    dtype = next(model.parameters()).dtype
    limit = tolerance if tolerance is not None else (1e-3 if dtype == torch.float32 else 3e-2)
    if diff > limit:
        raise ConfigError(
            f"train.packing: packed examples attend to each other with this model and attention "
            f"implementation ({getattr(model.config, '_attn_implementation', '?')}): relative logit "
            f"difference {diff:.3g} > {limit:g}",
            hint="set train.packing: false, or train.attn_implementation: flash_attention_2 on a GPU",
        )
    return diff
