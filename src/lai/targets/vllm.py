"""The vLLM target backend: the hf backend's prompts and answers, on vLLM's engine (CUDA).

Everything around the model is shared with the transformers backend
(:mod:`lai.targets.prompting`): prompts are rendered with the model's own tokenizer (chat
template with the generation prompt, raw strings as they are) and handed to vLLM as token
ids, so both backends feed the model the same tokens; the generated token ids are decoded,
cut at the stop strings and tidied the same way. Generation is greedy (temperature 0) with
the task's stop strings and ``max_new_tokens``. Log-likelihoods come from
``prompt_logprobs`` over context + continuation, split as lm-eval (and the hf backend) split
them.

vLLM is imported only when a target is built, so ``lai --help``, config validation and the
tests never need it; without it, building one fails with one line naming the extra to
install. Settings (``target.options``): ``tensor_parallel_size``, ``gpu_memory_utilization``,
``max_model_len``, ``seed``, and ``engine_args`` (any other ``vllm.LLM`` keyword).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Sequence
from typing import Any

from lai.errors import ConfigError, ModelError
from lai.locate import locate_model
from lai.targets.base import Prompt, Target
from lai.targets.prompting import (
    encode_pair,
    encode_prompt,
    finish_text,
    render_prompt,
    require_chat_template,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'lai[vllm]' (needs a CUDA GPU)"


def import_vllm() -> Any:
    """The ``vllm`` module, or a one-line ModelError saying how to get it."""
    try:
        import vllm
    except ModuleNotFoundError as error:
        if (error.name or "vllm").split(".")[0] == "vllm":
            raise ModelError("the vllm target backend needs vLLM, which is not installed", hint=INSTALL_HINT) from None
        raise ModelError(f"vLLM could not be imported: {error}", hint=INSTALL_HINT) from None
    except ImportError as error:  # installed, but built against another torch or CUDA
        first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ModelError(f"vLLM is installed but could not be imported: {first}", hint=INSTALL_HINT) from None
    return vllm


def engine_dtype(dtype: str) -> str:
    """``auto`` means bfloat16 on a GPU, as in the hf backend (vLLM's own ``auto`` may pick float16)."""
    return "bfloat16" if dtype == "auto" else dtype


def sum_prompt_logprobs(prompt_logprobs: Sequence[Any], tokens: Sequence[int], n_context: int) -> float:
    """Sum of the log-probabilities of ``tokens[n_context:]`` from vLLM's ``prompt_logprobs``.

    Entry ``i`` maps token ids to the log-probability of position ``i`` given the tokens
    before it (entry 0 is None); the prompt's own token is always among them. Values are
    ``Logprob`` objects in vLLM >= 0.4 and plain floats before.
    """
    total = 0.0
    for position in range(n_context, len(tokens)):
        value = prompt_logprobs[position][tokens[position]]
        total += float(getattr(value, "logprob", value))
    return total


class VLLMTarget(Target):
    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 16,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        seed: int = 0,
        engine_args: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(model)
        if settings:
            raise ConfigError(
                f"target.options: the vllm backend has no setting {', '.join(sorted(settings))}",
                hint="known: tensor_parallel_size, gpu_memory_utilization, max_model_len, seed, engine_args",
            )
        if device not in ("auto", "cuda") and not device.startswith("cuda"):
            raise ConfigError(f"the vllm backend runs on CUDA GPUs, not {device!r}", hint="set target.device: auto, or use backend hf")
        vllm = import_vllm()
        self.source = locate_model(model)
        if self.source.gguf_file:
            raise ModelError(
                f"the vllm backend does not load .gguf files ({model})",
                hint="point target.model at an HF folder or hub id (embedded models are converted automatically)",
            )
        self.batch_size = batch_size  # lai hands vLLM this many rows per call; vLLM schedules them itself
        self.tokenizer = self._load_tokenizer()
        require_chat_template(self.tokenizer, model)
        self._sampling_params = vllm.SamplingParams
        arguments: dict[str, Any] = {
            "model": self.source.location,
            "dtype": engine_dtype(dtype),
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
        }
        if max_model_len is not None:
            arguments["max_model_len"] = max_model_len
        arguments.update(engine_args or {})
        self.engine_arguments = arguments
        log.info("starting vLLM for %s (%s)", model, ", ".join(f"{k}={v}" for k, v in arguments.items() if k != "model"))
        try:
            self.llm: Any = vllm.LLM(**arguments)
        except (ValueError, RuntimeError) as error:
            first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            raise ModelError(
                f"vLLM could not load {model}: {first}",
                hint="lower target.options.gpu_memory_utilization or max_model_len, or check the GPU (nvidia-smi)",
            ) from None

    def _load_tokenizer(self) -> Any:
        """The same tokenizer the hf backend loads, so prompts render and split identically."""
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.source.location)
        except OSError as error:
            raise ModelError(
                f"could not load the tokenizer of {self.source.location}: {str(error).splitlines()[0][:300]}",
                hint="check target.model; hub ids need network access",
            ) from None

    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, prompt)

    def _run(self, rows: list[list[int]], params: Any) -> list[Any]:
        if self.llm is None:
            raise ModelError("this vLLM target was closed")
        return list(
            self.llm.generate([{"prompt_token_ids": row} for row in rows], sampling_params=params, use_tqdm=False)
        )

    def generate(self, prompts: list[Prompt], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        if not prompts:
            return []
        rows = [encode_prompt(self.tokenizer, p) for p in prompts]
        params = self._sampling_params(temperature=0.0, max_tokens=max_new_tokens, stop=list(stop))
        outputs = self._run(rows, params)
        # vLLM stops at a stop string but keeps every generated token id; decoding them and
        # cutting here gives exactly the hf backend's text.
        return [
            finish_text(self.tokenizer, prompt, output.outputs[0].token_ids, stop)
            for prompt, output in zip(prompts, outputs, strict=True)
        ]

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Sum of continuation log-probs, encoded as lm-eval does (context + continuation together)."""
        if not pairs:
            return []
        encoded = [encode_pair(self.tokenizer, self.render(context), continuation) for context, continuation in pairs]
        # One token is generated and thrown away; prompt_logprobs=1 also returns the prompt's own token.
        params = self._sampling_params(temperature=0.0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        outputs = self._run([tokens for tokens, _ in encoded], params)
        return [
            sum_prompt_logprobs(output.prompt_logprobs, tokens, n_context)
            for (tokens, n_context), output in zip(encoded, outputs, strict=True)
        ]

    def fingerprint(self) -> str:
        return self.source.fingerprint()

    def close(self) -> None:
        """Free the engine and its GPU memory before another stage (training) loads a model."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        with contextlib.suppress(Exception):  # vLLM >= 0.8 (V1): stop the engine-core process
            engine.engine_core.shutdown()  # type: ignore[union-attr]
        del llm, engine
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()

