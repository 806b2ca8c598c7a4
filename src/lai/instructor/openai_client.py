"""An instructor behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp).

Retries with backoff for 429, 5xx, timeouts and dropped connections come from the
``openai`` SDK (it honours Retry-After). The API key is read from the environment
variable the config names and lives only in memory.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import openai

from lai.errors import InstructorError
from lai.instructor.base import Instructor, InstructRequest, failed_record, record_for
from lai.records import InstructRecord

log = logging.getLogger(__name__)


class OpenAIInstructor(Instructor):
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 1024,
        seed: int | None = None,
        concurrency: int = 4,
        timeout_s: float = 180.0,
        max_retries: int = 3,
        structured_output: str = "json_schema",
        **options: Any,
    ) -> None:
        api_key = "not-needed"  # local servers ignore it; the SDK insists on a value
        if api_key_env:
            api_key = os.environ.get(api_key_env, "")
            if not api_key:
                raise InstructorError(
                    f"the environment variable {api_key_env} is empty",
                    hint=f"export {api_key_env}=<your key> (instructor.api_key_env names it)",
                )
        self.base_url = base_url
        self.model_name = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.concurrency = concurrency
        self.structured_output = structured_output
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    def check(self) -> None:
        try:
            self.client.with_options(max_retries=1, timeout=15).models.list()
        except openai.AuthenticationError:
            raise InstructorError(
                f"the instructor at {self.base_url} rejected the API key", hint="check instructor.api_key_env"
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise InstructorError(
                f"the instructor endpoint {self.base_url} is unreachable ({type(error).__name__})",
                hint="start the server, fix instructor.base_url, or set instructor.local.enabled: true",
            ) from None
        except openai.APIStatusError:
            pass  # some servers lack /models; the first real request will tell

    def _response_format(self, request: InstructRequest) -> dict[str, Any] | None:
        if request.schema is None or self.structured_output == "none":
            return None
        if self.structured_output == "json_object":
            # llama.cpp's server constrains decoding with a grammar built from "schema".
            return {"type": "json_object", "schema": request.schema}
        return {
            "type": "json_schema",
            "json_schema": {"name": "training_samples", "schema": request.schema},
        }

    def complete(self, request: InstructRequest) -> InstructRecord:
        started = time.monotonic()
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": request.messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            kwargs["seed"] = self.seed
        response_format = self._response_format(request)
        if response_format:
            kwargs["response_format"] = response_format
        try:
            response = self.client.chat.completions.create(**kwargs)
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise InstructorError(
                f"lost the instructor endpoint {self.base_url} after retries ({type(error).__name__})",
                hint="records written so far are kept; rerun the same command to resume",
            ) from None
        except openai.APIStatusError as error:
            return failed_record(
                request, self.model_name, f"HTTP {error.status_code}: {str(error)[:300]}", time.monotonic() - started
            )
        except (ValueError, openai.APIResponseValidationError) as error:  # a body that is not JSON
            return failed_record(
                request, self.model_name, f"malformed response: {type(error).__name__}: {str(error)[:200]}",
                time.monotonic() - started,
            )
        seconds = time.monotonic() - started
        if not getattr(response, "choices", None):
            return failed_record(request, self.model_name, "reply had no choices", seconds)
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return record_for(
            request,
            status="ok",
            reply=choice.message.content or "",
            finish_reason=choice.finish_reason,
            model=getattr(response, "model", None) or self.model_name,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            seconds=seconds,
        )

    def close(self) -> None:
        self.client.close()
