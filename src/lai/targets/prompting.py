"""What every target backend does the same way around the model: prompts in, text out.

A backend that follows these renders a prompt, tokenises it, cuts its text and splits a
log-likelihood pair exactly as the others do, so a score cannot depend on which engine
(transformers, vLLM) ran the model. Nothing here imports torch or an engine; the
tokenizer is any Hugging Face tokenizer.

- :func:`render_prompt`: chat messages through the model's chat template (with the
  generation prompt); a raw string as it is, like lm-evaluation-harness;
- :func:`encode_prompt`: the rendered text's token ids, no special tokens added (the chat
  template already holds them);
- :func:`cut_at_stop` and :func:`tidy_reply`: a completion ends before its first stop
  string; a chat reply is stripped, a raw completion kept exactly (HumanEval's indentation);
- :func:`encode_pair`: a (context, continuation) pair as lm-eval encodes it: the two texts
  together, with the context's trailing spaces moved to the continuation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lai.errors import ModelError
from lai.targets.base import Prompt


def require_chat_template(tokenizer: Any, model: str) -> None:
    """lai prompts targets as chat models; a base model without a template is refused."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"{model} has no chat template",
            hint="use an instruction-tuned model (lai prompts targets as chat models)",
        )


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    return encode_text(tokenizer, render_prompt(tokenizer, prompt))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the earliest stop string (lm-eval's post-hoc cut)."""
    for marker in stop:
        text = text.split(marker)[0]
    return text


def tidy_reply(prompt: Prompt, text: str) -> str:
    """A chat reply is stripped; a raw completion is kept exactly, as lm-eval keeps it."""
    return text if isinstance(prompt, str) else text.strip()


def finish_text(tokenizer: Any, prompt: Prompt, generated: Sequence[int], stop: Sequence[str]) -> str:
    """Generated token ids to the text a backend returns: decoded, cut, tidied."""
    text = tokenizer.decode(list(generated), skip_special_tokens=True)
    return tidy_reply(prompt, cut_at_stop(text, stop))


def split_pair(context_text: str, continuation: str) -> tuple[str, str]:
    """A trailing space belongs to the continuation, so both tokenise as one text would."""
    spaces = len(context_text) - len(context_text.rstrip(" "))
    return context_text[: len(context_text) - spaces], " " * spaces + continuation


def encode_pair(tokenizer: Any, context_text: str, continuation: str) -> tuple[list[int], int]:
    """Token ids of context + continuation together, and how many of them are context.

    The continuation's log-likelihood is the sum over ``tokens[n_context:]``, each predicted
    from everything before it; ``n_context`` is at least 1 so the first scored token has
    something to be predicted from.
    """
    context_text, continuation = split_pair(context_text, continuation)
    whole = encode_text(tokenizer, context_text + continuation)
    n_context = len(encode_text(tokenizer, context_text))
    return whole, max(n_context, 1)
