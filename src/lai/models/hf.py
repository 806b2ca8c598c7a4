"""The transformers target backend: batched greedy chat generation on CPU or GPU.

Prompts are rendered with the model's chat template and left-padded so every row's
generation starts at the same position. Within a call, prompts are sorted by length so
a batch wastes little on padding; results come back in the caller's order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lai.errors import ModelError
from lai.models.base import Messages, Target
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


class HFTarget(Target):
    def __init__(
        self,
        model: str,
        *,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int = 16,
        threads: int | None = None,
        **settings: Any,
    ) -> None:
        import torch

        super().__init__(model)
        torch.set_num_threads(int(threads or os.cpu_count() or 1))
        self.source = resolve_model(model)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.model, self.tokenizer = load_model_and_tokenizer(
            self.source, pick_dtype(dtype, self.device), self.device
        )
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(
                f"{model} has no chat template",
                hint="use an instruction-tuned model (lai prompts targets as chat models)",
            )

    def render(self, prompt: Messages) -> str:
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def generate(self, prompts: list[Messages], max_new_tokens: int) -> list[str]:
        import torch

        texts = [self.render(p) for p in prompts]
        lengths = [len(self.tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        results: list[str] = [""] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            with torch.inference_mode():
                output = self.model.generate(
                    **batch,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            for i, row in zip(chunk, new_tokens, strict=True):
                results[i] = self.tokenizer.decode(row, skip_special_tokens=True).strip()
        return results

    def fingerprint(self) -> str:
        location = Path(self.source.location)
        if self.source.gguf_file:
            location = location / self.source.gguf_file
        return fingerprint_files(location) if location.exists() else f"hub:{self.source.location}"

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
