"""The transformers target backend: batched greedy generation and log-likelihoods, CPU or GPU.

Chat prompts are rendered with the model's chat template, string prompts are used as
they are (like lm-evaluation-harness); both are left-padded so every row's generation
starts at the same position. Within a call, prompts are sorted by length so a batch
wastes little on padding; results come back in the caller's order. Stop strings end a
row's generation as soon as it produces one (transformers' ``stop_strings``) and the
text is cut there, as lm-eval does.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lai.errors import ModelError
from lai.models.base import Prompt, Target
from lai.models.greedy import continuous_greedy, repeat_cache, supports_continuous
from lai.models.resolve import ModelSource, fingerprint_files, resolve_model

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


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    for marker in stop:
        text = text.split(marker)[0]
    return text


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
        **settings: Any,
    ) -> None:
        import torch

        super().__init__(model)
        torch.set_num_threads(int(threads or os.cpu_count() or 1))
        self.source = resolve_model(model)
        self.device = pick_device(device)
        self.batch_size = batch_size
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
        # Continuous batching needs a plain full-attention KV cache; probe it once.
        self.continuous = self._probe_continuous() if continuous is None else continuous
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(
                f"{model} has no chat template",
                hint="use an instruction-tuned model (lai prompts targets as chat models)",
            )

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )

    def generate(
        self, prompts: list[Prompt], max_new_tokens: int, stop: Sequence[str] = ()
    ) -> list[str]:
        from transformers import DynamicCache

        rows = [self.tokenizer(self.render(p), add_special_tokens=False).input_ids for p in prompts]
        if not rows:
            return []
        # Longest first: early batches set the cache width, later (shorter) rows fit into it.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
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
            )  # fmt: skip
        else:
            generated = [[] for _ in rows]
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                for i, tokens in zip(
                    chunk,
                    self._generate_batch(
                        [rows[i] for i in chunk], shared, new_cache, max_new_tokens, stop
                    ),
                    strict=True,
                ):
                    generated[i] = tokens
        texts = [cut_at_stop(self.tokenizer.decode(g, skip_special_tokens=True), stop) for g in generated]
        # A chat reply is tidied; a raw completion is kept exactly (its leading indentation
        # is code for HumanEval, and lm-eval keeps it as generated).
        return [text if isinstance(p, str) else text.strip() for p, text in zip(prompts, texts, strict=True)]

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

        input_ids, attention_mask = self._pad(rows, shared)
        stop_kwargs = {"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}
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

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Sum of continuation log-probs, encoded as lm-eval does (context + continuation together)."""
        import torch

        encoded = []
        for context, continuation in pairs:
            context_text = self.render(context)
            # A trailing space belongs to the continuation, so both tokenise as one text would.
            spaces = len(context_text) - len(context_text.rstrip(" "))
            context_text, continuation = (
                context_text[: len(context_text) - spaces],
                " " * spaces + continuation,
            )
            whole = self.tokenizer(context_text + continuation, add_special_tokens=False).input_ids
            n_context = len(self.tokenizer(context_text, add_special_tokens=False).input_ids)
            encoded.append((whole, max(n_context, 1)))
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        scores = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(encoded[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):  # right padding: positions stay aligned with tokens
                tokens = encoded[i][0]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(chunk):
                tokens, n_context = encoded[i]
                targets = torch.tensor(tokens[n_context:], device=logprobs.device)
                predicted = logprobs[row, n_context - 1 : len(tokens) - 1]
                scores[i] = float(predicted.gather(1, targets[:, None]).sum())
        return scores

    def fingerprint(self) -> str:
        location = Path(self.source.location)
        if self.source.gguf_file:
            location = location / self.source.gguf_file
        return fingerprint_files(location) if location.exists() else f"hub:{self.source.location}"

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
