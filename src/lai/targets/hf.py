"""The transformers target backend: batched greedy generation and log-likelihoods, CPU or GPU.

Chat prompts are rendered with the model's chat template, string prompts are used as
they are (like lm-evaluation-harness); both are left-padded so every row's generation
starts at the same position. Within a call, prompts are sorted by length so a batch
wastes little on padding, and batches are bounded by a token budget (``max_batch_tokens``:
rows x (prompt + new tokens)) as well as by ``batch_size`` rows; results come back in the
caller's order. A row stops as soon as its generated text holds one of the stop strings
(never matched across the end of the prompt) and the text is cut there, as lm-eval does.

Log-likelihood requests are grouped by context: each distinct context is run once, its
KV cache shared by all its continuations (MMLU's four letters, ARC's options), and only
the continuations' own tokens are run again.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

from lai.errors import ConfigError, ModelError
from lai.locate import ModelSource, locate_model
from lai.processes import usable_cpus
from lai.targets.base import Prompt, Target
from lai.targets.batching import (
    DEFAULT_MAX_BATCH_TOKENS,
    budget_batches,
    longest_first,
    padded_tokens,
)
from lai.targets.greedy import (
    continuous_greedy,
    generated_stop_criteria,
    repeat_cache,
    select_rows,
    supports_continuous,
)
from lai.targets.prompting import (
    encode_pair,
    encode_prompt,
    finish_text,
    render_prompt,
    require_chat_template,
)

log = logging.getLogger(__name__)


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_model_and_tokenizer(source: ModelSource, dtype: Any, device: str) -> tuple[Any, Any]:
    """Load with clear errors: a missing or broken model is a user problem, not a traceback."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.disable_progress_bar()  # lai draws its own bars
    kwargs: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **kwargs)
    except OSError as error:
        raise ModelError(
            f"could not load model {source.location}: {str(error).splitlines()[0][:300]}",
            hint="check target.model; hub ids need network access",
        ) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer


MIN_SHARED_PREFIX = 32  # tokens; below this a shared-prefix cache saves less than it costs


def common_prefix_length(rows: list[list[int]]) -> int:
    """Tokens all rows share at the start, leaving every row at least one token of its own."""
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    length = 0
    while length < limit and all(r[length] == first[length] for r in rows):
        length += 1
    return max(length, 0)


class HFTarget(Target):
    def __init__(
        self,
        model: str,
        *,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 16,
        threads: int | None = None,
        prefix_cache: bool = True,
        continuous: bool | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        share_context: bool = True,
        **settings: Any,
    ) -> None:
        # target.options arrive here as keywords: a misspelt one must not vanish silently.
        if settings:
            raise ConfigError(
                f"target.options: the hf backend has no setting {', '.join(sorted(settings))}",
                hint="known: threads, prefix_cache, continuous, max_batch_tokens, share_context",
            )
        import torch

        super().__init__(model)
        torch.set_num_threads(int(threads or usable_cpus()))  # affinity and cgroup quota, not the machine's count
        self.source = locate_model(model)
        self.device = pick_device(device)
        self.batch_size = batch_size
        if max_batch_tokens < 1:
            raise ModelError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        self.max_batch_tokens = int(max_batch_tokens)
        self.share_context = share_context
        #: When a list, every forward pass appends (kind, rows, padded tokens): for tests.
        self.batch_log: list[tuple[str, int, int]] | None = None
        self.prefix_cache = prefix_cache
        self._cached_prefix: tuple[list[int], Any] | None = None
        self.model, self.tokenizer = load_model_and_tokenizer(
            self.source, pick_dtype(dtype, self.device), self.device
        )
        # transformers 5.2x renames `past_key_values` to `cache`; accept either.
        self._cache_argument = (
            "cache"
            if "cache" in inspect.signature(self.model.forward).parameters
            else "past_key_values"
        )
        # Continuous batching (and sharing a context's cache) needs a plain full-attention
        # KV cache; probe it once.
        self.cache_selectable = self._probe_continuous()
        self.continuous = self.cache_selectable if continuous is None else continuous
        # Only the last position's logits are needed after a prefill (as model.generate does).
        self._last_logits = (
            {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
        )
        require_chat_template(self.tokenizer, model)

    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, prompt)

    def generate(
        self, prompts: list[Prompt], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        from transformers import DynamicCache

        rows = [encode_prompt(self.tokenizer, p) for p in prompts]
        if not rows:
            return []
        lengths = [len(r) for r in rows]
        # Longest first: early batches set the cache width, later (shorter) rows fit into it.
        order = longest_first(lengths)
        shared = common_prefix_length(rows) if self.prefix_cache else 0
        prefix_cache = self._prefix_cache(rows[0][:shared]) if shared >= MIN_SHARED_PREFIX else None
        if prefix_cache is None:
            shared = 0
        new_cache = (
            repeat_cache(prefix_cache)
            if prefix_cache is not None
            else (lambda _rows: DynamicCache())
        )
        if self.continuous:
            generated = continuous_greedy(
                self.model, self.tokenizer, rows, order=order, pad=lambda group: self._pad(group, shared),
                new_cache=new_cache, cached_tokens=shared, cache_argument=self._cache_argument,
                batch_size=self.batch_size, max_new_tokens=max_new_tokens, stop=stop, device=self.device,
                max_batch_tokens=self.max_batch_tokens, prefill_kwargs=self._last_logits,
                record=None if self.batch_log is None else lambda running, tokens: self._log("generate", len(running), tokens),
                done=self.row_done,
            )  # fmt: skip
        else:
            generated = [[] for _ in rows]
            for chunk in budget_batches(
                order, lengths, max_tokens=self.max_batch_tokens, max_rows=self.batch_size, extra=max_new_tokens
            ):
                self._log("generate", len(chunk), padded_tokens(chunk, lengths, max_new_tokens))
                for i, tokens in zip(
                    chunk,
                    self._generate_batch(
                        [rows[i] for i in chunk], shared, new_cache, max_new_tokens, stop
                    ),
                    strict=True,
                ):
                    generated[i] = tokens
                if self.row_done is not None:
                    self.row_done(len(chunk))
        return [finish_text(self.tokenizer, p, g, stop) for p, g in zip(prompts, generated, strict=True)]

    def _generate_batch(
        self,
        rows: list[list[int]],
        shared: int,
        new_cache: Any,
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> list[list[int]]:
        """One batch through ``model.generate``: for models whose cache cannot be batched continuously."""
        import torch
        from transformers import StoppingCriteriaList

        input_ids, attention_mask = self._pad(rows, shared)
        stop_kwargs = (
            {"stopping_criteria": StoppingCriteriaList([generated_stop_criteria(self.tokenizer, stop, input_ids.shape[1])])}
            if stop
            else {}
        )
        cache_kwargs = {self._cache_argument: new_cache(len(rows))} if shared else {}
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                temperature=None, top_p=None, top_k=None, **cache_kwargs, **stop_kwargs,
            )  # fmt: skip
        return output[:, input_ids.shape[1] :].tolist()

    def _pad(self, rows: list[list[int]], shared: int) -> tuple[Any, Any]:
        """Pad each row on the left of its unshared part: [shared prefix][pads][rest].

        With no shared prefix this is plain left padding. Positions come from the
        attention mask (cumsum), so the pads in the middle shift nothing.
        """
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, row in enumerate(rows):
            rest = row[shared:]
            ids[n, :shared] = torch.tensor(row[:shared], dtype=torch.long)
            mask[n, :shared] = 1
            if rest:
                ids[n, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
                mask[n, width - len(rest) :] = 1
        return ids, mask

    def _probe_continuous(self) -> bool:
        import torch
        from transformers import DynamicCache

        cache = DynamicCache()
        with torch.inference_mode():
            self.model(
                input_ids=torch.tensor([[0]], device=self.device),
                use_cache=True,
                **{self._cache_argument: cache},
            )
        return supports_continuous(cache)

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """The KV cache of a prompt prefix every row shares (few-shot examples, system prompt).

        Computing it once per call instead of once per row is the largest single saving on
        CPU: for 8-shot GSM8K the shared prefix is ~90 % of each prompt, and prefill, not
        decoding, dominates the time.
        """
        import torch
        from transformers import DynamicCache

        if self._cached_prefix is not None and self._cached_prefix[0] == prefix:
            return self._cached_prefix[1]
        cache = DynamicCache()
        with torch.inference_mode():
            self.model(
                input_ids=torch.tensor([prefix], device=self.device),
                use_cache=True,
                **{self._cache_argument: cache},
            )
        self._cached_prefix = (prefix, cache)
        return cache

    def _log(self, kind: str, rows: int, tokens: int) -> None:
        if self.batch_log is not None:
            self.batch_log.append((kind, rows, tokens))

    def _encode_pair(self, context: Prompt, continuation: str) -> tuple[list[int], int]:
        """(context + continuation tokens, context length), encoded as lm-eval does: together."""
        return encode_pair(self.tokenizer, self.render(context), continuation)

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Sum of continuation log-probs, encoded as lm-eval does (context + continuation together).

        Contexts that tokenise the same are run once and their KV cache reused for each
        continuation; models whose cache cannot be indexed by row (sliding-window or hybrid
        layers) run every (context, continuation) whole, batched by the token budget.
        """
        encoded = [self._encode_pair(context, continuation) for context, continuation in pairs]
        if not encoded:
            return []
        if self.share_context and self.cache_selectable:
            return self._loglikelihood_shared(encoded)
        return self._loglikelihood_whole(encoded)

    def _loglikelihood_whole(self, encoded: list[tuple[list[int], int]]) -> list[float]:
        """Every (context, continuation) run whole: left-padded, so each row's continuation
        ends at the last column and only the last positions' logits are computed."""
        import torch

        lengths = [len(whole) for whole, _ in encoded]
        scores = [0.0] * len(encoded)
        for chunk in budget_batches(
            longest_first(lengths), lengths, max_tokens=self.max_batch_tokens, max_rows=self.batch_size
        ):
            width = max(lengths[i] for i in chunk)
            keep = 1 + max(max(len(whole) - n_context, 0) for whole, n_context in (encoded[i] for i in chunk))
            self._log("loglikelihood", len(chunk), len(chunk) * width)
            # left padding: every continuation ends at the last column
            ids, mask = self._pad([encoded[i][0] for i in chunk], shared=0)
            ids, mask = ids.to(self.device), mask.to(self.device)
            keep_kwargs = {"logits_to_keep": keep} if self._last_logits else {}
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), **keep_kwargs
                ).logits[:, -keep:]
            for row, i in enumerate(chunk):
                tokens, n_context = encoded[i]
                span = len(tokens) - n_context
                if span <= 0:
                    continue
                targets = torch.tensor(tokens[n_context:], device=logits.device)
                predicted = torch.log_softmax(logits[row, keep - 1 - span : keep - 1].float(), dim=-1)
                scores[i] = float(predicted.gather(1, targets[:, None]).sum())
        return scores

    def _loglikelihood_shared(self, encoded: list[tuple[list[int], int]]) -> list[float]:
        """Each distinct context once, then its continuations on copies of its KV cache.

        Context pass: distinct contexts, longest first, left-padded, batched by the token
        budget; it gives each continuation's first-token log-prob (the context's last
        logits). Continuation pass: every continuation's tokens but the last, right-padded
        after its context's cache; only continuations of two or more tokens need it.
        """
        import torch
        from transformers import DynamicCache

        index: dict[tuple[int, ...], int] = {}
        members: list[list[int]] = []
        for i, (whole, n_context) in enumerate(encoded):
            group = index.setdefault(tuple(whole[:n_context]), len(index))
            if group == len(members):
                members.append([])
            members[group].append(i)
        contexts = [list(key) for key in index]
        context_lengths = [len(c) for c in contexts]
        scores = [0.0] * len(encoded)
        for chunk in budget_batches(
            longest_first(context_lengths), context_lengths, max_tokens=self.max_batch_tokens, max_rows=self.batch_size
        ):
            width = max(context_lengths[g] for g in chunk)
            self._log("context", len(chunk), len(chunk) * width)
            # left padding: every context ends at the last column
            ids, mask = self._pad([contexts[g] for g in chunk], shared=0)
            ids, mask = ids.to(self.device), mask.to(self.device)
            cache = DynamicCache()
            with torch.inference_mode():
                last = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True, **{self._cache_argument: cache}, **self._last_logits,
                ).logits[:, -1, :]  # fmt: skip
            first = torch.log_softmax(last.float(), dim=-1)
            rest: list[tuple[int, int, list[int]]] = []  # (request, context row, continuation tokens)
            for row, g in enumerate(chunk):
                for i in members[g]:
                    whole, n_context = encoded[i]
                    continuation = whole[n_context:]
                    if continuation:
                        scores[i] = float(first[row, continuation[0]])
                    if len(continuation) > 1:
                        rest.append((i, row, continuation))
            if rest:
                self._score_continuations(rest, cache, mask, width, scores)
        return scores

    def _score_continuations(
        self, rest: list[tuple[int, int, list[int]]], cache: Any, mask: Any, width: int, scores: list[float]
    ) -> None:
        """Add the log-probs of continuation tokens 2.. to ``scores``, on the contexts' cache."""
        import torch

        lengths = [len(continuation) - 1 for _, _, continuation in rest]  # inputs: all but the last token
        pad = self.tokenizer.pad_token_id
        for chunk in budget_batches(
            longest_first(lengths), lengths, max_tokens=self.max_batch_tokens, max_rows=self.batch_size, extra=width
        ):
            span = max(lengths[j] for j in chunk)
            self._log("continuation", len(chunk), len(chunk) * (width + span))
            rows = torch.tensor([rest[j][1] for j in chunk], device=mask.device)
            ids = torch.full((len(chunk), span), pad, dtype=torch.long)
            own = torch.zeros((len(chunk), span), dtype=torch.long)
            for n, j in enumerate(chunk):
                ids[n, : lengths[j]] = torch.tensor(rest[j][2][:-1])
                own[n, : lengths[j]] = 1
            context_mask = mask[rows]
            full_mask = torch.cat([context_mask, own.to(mask.device)], dim=1)
            positions = context_mask.sum(-1, keepdim=True) + torch.arange(span, device=mask.device)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(mask.device), attention_mask=full_mask, position_ids=positions,
                    use_cache=True, **{self._cache_argument: select_rows(cache, rows)},
                ).logits  # fmt: skip
            for n, j in enumerate(chunk):
                i, _, continuation = rest[j]
                targets = torch.tensor(continuation[1:], device=logits.device)
                predicted = torch.log_softmax(logits[n, : lengths[j]].float(), dim=-1)
                scores[i] += float(predicted.gather(1, targets[:, None]).sum())

    def fingerprint(self) -> str:
        return self.source.fingerprint()

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
