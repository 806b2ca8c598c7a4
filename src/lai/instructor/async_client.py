"""An asyncio instructor for OpenAI-compatible endpoints that rate-limit, fail and cost money.

The instruct stage sends one request per error, thousands per iteration. Threads around a
synchronous client with the SDK's retries neither pace themselves below RPM/TPM limits nor
avoid paying twice for a reply after a crash. This client:

* sends requests concurrently on ``openai.AsyncOpenAI`` (bounded by ``concurrency``),
  paced by a client-side RPM + TPM limiter (:mod:`lai.instructor.rate_limit`);
* retries on its own (the SDK's retries are off, so every attempt is paced and counted):
  429, 5xx, timeouts, dropped connections, malformed bodies and empty choices, with
  exponential back-off and full jitter, obeying a 429's Retry-After, at most
  ``max_retries`` times; what still fails becomes a failed record with the reason;
* looks every request up in a persistent SQLite cache first, and makes every paid HTTP
  reply durable the moment it arrives, before anything else happens to it: one fsynced
  line in the append-only spend log (:mod:`lai.instructor.ledger`), then a row in the
  cache (:mod:`lai.instructor.request_cache`), including the first reply of a corrective
  retry; so a rerun after kill -9 at any moment pays again at most for the replies that
  were on the wire;
* derives the money spent from that log and stops starting requests at ``max_cost``, so
  the cap holds across kills and resumes;
* asks once more, with a corrective message, when a reply holds no samples at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import openai

from lai.errors import ConfigError, InstructorError
from lai.instructor.base import Instructor, InstructRequest, failed_record, record_for
from lai.instructor.ledger import CALL_FIELDS, BudgetExceeded, CostLedger, cost_of
from lai.instructor.rate_limit import RateLimiter, estimate_tokens
from lai.instructor.reply_json import parse_reply
from lai.instructor.request_cache import RequestCache
from lai.records import InstructRecord

log = logging.getLogger(__name__)

CORRECTIVE_MESSAGE = (
    "Your reply could not be read: it contained no samples. Answer again with JSON only, "
    'no prose and no markdown, in exactly this shape: {"diagnosis": "...", "samples": '
    '[{"question": "...", "solution": "...", "answer": "..."}]}'
)

#: A wait before a retry this long (seconds) is logged as a warning, so a stage waiting on
#: the server does not look hung.
LONG_WAIT_S = 10.0
#: The largest Retry-After we obey; a bigger value is more likely a bug than a plan.
MAX_RETRY_AFTER_S = 300.0

# The record fields that describe the request (taken from the request on a cache hit, so
# two requests with identical messages but different ids each get their own record).
_REQUEST_FIELDS = {"id", "source_ids", "task", "strategy", "n_requested", "messages", "template", "template_hash"}


class _Retryable(Exception):
    """One attempt failed in a way worth another try."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(error: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` or ``Retry-After`` (seconds)."""
    headers = getattr(error.response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue  # an HTTP date: rare for APIs; fall back to our own back-off
        return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
    return None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class AsyncOpenAIInstructor(Instructor):
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 1024,
        seed: int | None = None,
        concurrency: int = 16,
        timeout_s: float = 180.0,
        max_retries: int = 5,
        structured_output: str = "json_schema",
        rpm: float | None = None,
        tpm: float | None = None,
        burst_s: float = 1.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        cache_path: Path | str | None = None,
        ledger: CostLedger | None = None,
        stage: str = "instruct",
        iteration: int = 0,
        corrective_retry: bool = True,
        jitter_seed: int | None = None,
        **options: Any,
    ) -> None:
        if options:  # the config refuses these first; this guards programmatic use
            raise ConfigError(f"the openai instructor has no setting {', '.join(sorted(options))}")
        api_key = "not-needed"  # local servers ignore it; the SDK insists on a value
        if api_key_env:
            api_key = os.environ.get(api_key_env, "")
            if not api_key:
                raise InstructorError(
                    f"the environment variable {api_key_env} is empty",
                    hint=f"export {api_key_env}=<your key> (instructor.api_key_env names it)",
                )
        # The key lives only here, in memory; it is never part of a cache key or record.
        self._api_key = api_key
        self.base_url = base_url
        self.model_name = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.structured_output = structured_output
        self.rpm, self.tpm, self.burst_s = rpm, tpm, burst_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.cache = RequestCache(cache_path) if cache_path is not None else None
        self.ledger = ledger if ledger is not None else CostLedger()
        self.stage = stage
        # What the endpoint is to the user, for its error lines: the judge reuses this client.
        self.role = "judge" if stage == "judge" else "instructor"
        self.iteration = iteration
        self.corrective_retry = corrective_retry
        self._rng = random.Random(jitter_seed)

    # -- request building ------------------------------------------------------------------

    def _new_client(self) -> openai.AsyncOpenAI:
        # max_retries=0: every retry is ours, so it is paced by the limiter and bounded here.
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
        )

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

    # A request may carry its own sampling settings in ``extra`` (the re-solving check
    # asks for short answers at its own temperature); the stage's settings are the default.
    def _temperature(self, request: InstructRequest) -> float:
        return float(request.extra.get("temperature", self.temperature))

    def _max_tokens(self, request: InstructRequest) -> int:
        return int(request.extra.get("max_tokens", self.max_tokens))

    def cache_key(self, request: InstructRequest) -> str:
        """The key of a request's final record: that of its first call."""
        return self._call_key(request, request.messages)

    def _kwargs(self, request: InstructRequest, messages: list[dict[str, str]]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "temperature": self._temperature(request),
            "max_tokens": self._max_tokens(request),
            # Lets the server (and its logs) tie attempts to the request; ASCII only.
            "extra_headers": {
                "X-Client-Request-Id": request.id.encode("ascii", "replace").decode()
            },
        }
        if self.seed is not None:
            kwargs["seed"] = self.seed
        response_format = self._response_format(request)
        if response_format:
            kwargs["response_format"] = response_format
        return kwargs

    def _backoff(self, attempt: int) -> float:
        # Full jitter (uniform in [0, base * 2^attempt]) spreads retries of many requests
        # that failed together, instead of sending them back in one burst.
        return self._rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    # -- one request -----------------------------------------------------------------------

    async def _attempt(
        self, client: openai.AsyncOpenAI, kwargs: dict[str, Any]
    ) -> tuple[str, str | None, str, int, int, str | None]:
        """One HTTP call: (reply, finish_reason, model, prompt and completion tokens, response id)."""
        try:
            response = await client.chat.completions.create(**kwargs)
        except openai.APIStatusError as error:
            status = error.status_code
            reason = f"HTTP {status}: {str(error)[:300]}"
            if status == 429:
                raise _Retryable(reason, _retry_after(error)) from None
            if status >= 500 or status in (408, 409):
                raise _Retryable(reason) from None
            raise  # 400, 401, 404...: asking again will not help
        except openai.APITimeoutError:
            raise _Retryable(f"timeout after {self.timeout_s:g} s") from None
        except openai.APIConnectionError as error:
            # Refused (nothing listens: the endpoint is down) differs from dropped (the
            # server closed this one connection): only the first stops the stage.
            if type(error.__cause__).__name__ == "ConnectError":
                raise _Retryable(f"endpoint unreachable: {str(error.__cause__)[:200]}") from None
            raise _Retryable(f"connection lost: {str(error)[:200]}") from None
        except (ValueError, openai.APIResponseValidationError) as error:
            raise _Retryable(
                f"malformed response: {type(error).__name__}: {str(error)[:200]}"
            ) from None
        if isinstance(response, str):  # the client hands back a non-JSON body as text
            raise self._not_an_api("a text or HTML page")
        if not getattr(response, "choices", None):
            raise _Retryable("reply had no choices")
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return (
            choice.message.content or "",
            choice.finish_reason,
            getattr(response, "model", None) or self.model_name,
            getattr(usage, "prompt_tokens", 0) or 0,
            getattr(usage, "completion_tokens", 0) or 0,
            getattr(response, "id", None),
        )

    def _call_key(self, request: InstructRequest, messages: list[dict[str, str]]) -> str:
        return RequestCache.key(
            base_url=self.base_url,
            model=self.model_name,
            messages=messages,
            temperature=self._temperature(request),
            max_tokens=self._max_tokens(request),
            seed=self.seed,
            response_format=self._response_format(request),
            sample_index=int(request.extra.get("sample_index", 0)),
        )

    async def _call(
        self,
        client: openai.AsyncOpenAI,
        limiter: RateLimiter,
        semaphore: asyncio.Semaphore,
        request: InstructRequest,
        messages: list[dict[str, str]],
        kind: str = "first",
    ) -> tuple[str, str | None, str, int, int]:
        """One paid call, with retries; raise _Retryable (the last reason) or APIStatusError.

        A reply received before (for exactly these messages) comes from the cache for
        free. A new reply is booked in the spend log and stored in the cache before this
        returns: nothing that happens afterwards (a corrective retry, its back-off, a
        kill) can make it be paid for again.
        """
        key = self._call_key(request, messages)
        if self.cache is not None:
            stored = self.cache.get_call(key)
            if stored is not None:
                return (
                    stored["reply"], stored.get("finish_reason"), stored.get("model") or self.model_name,
                    int(stored.get("prompt_tokens") or 0), int(stored.get("completion_tokens") or 0),
                )  # fmt: skip
        result = await self._send(client, limiter, semaphore, request, messages)
        reply, finish, model, prompt, completion, response_id = result
        call = dict(zip(CALL_FIELDS, (reply, finish, model, prompt, completion), strict=True))
        self.ledger.add(
            stage=self.stage, iteration=self.iteration, model=model,
            prompt_tokens=prompt, completion_tokens=completion,
            call={"request_id": request.id, "kind": kind, "response_id": response_id, "key": key, **call},
        )  # fmt: skip
        if self.cache is not None:
            self.cache.put_call(key, call)
        return reply, finish, model, prompt, completion

    async def _send(
        self,
        client: openai.AsyncOpenAI,
        limiter: RateLimiter,
        semaphore: asyncio.Semaphore,
        request: InstructRequest,
        messages: list[dict[str, str]],
    ) -> tuple[str, str | None, str, int, int, str | None]:
        """Send with retries; raise _Retryable (the last reason) or APIStatusError when done."""
        kwargs = self._kwargs(request, messages)
        estimated = estimate_tokens(messages, self._max_tokens(request))
        for attempt in range(self.max_retries + 1):
            # The slot is held only while a request is on the wire, not during back-off,
            # so one unlucky request does not idle a concurrency slot.
            async with semaphore:
                await limiter.acquire(estimated)
                try:
                    result = await self._attempt(client, kwargs)
                except _Retryable as error:
                    limiter.settle(estimated, 0)  # a failed attempt used no tokens
                    if attempt >= self.max_retries:
                        raise
                    failure = error
                except BaseException:
                    limiter.settle(estimated, 0)
                    raise
                else:
                    limiter.settle(estimated, result[3] + result[4])
                    return result
            delay = (
                failure.retry_after if failure.retry_after is not None else self._backoff(attempt)
            )
            # A long wait is said where a user sees it: a stage that seems stuck is waiting on
            # the server (a 429's Retry-After), not hung.
            why = "the server's Retry-After" if failure.retry_after is not None else "back-off"
            log.log(
                logging.WARNING if delay >= LONG_WAIT_S else logging.DEBUG,
                "request %s to the %s: %s; retry %d in %.1f s (%s)",
                request.id, self.role, failure.reason, attempt + 1, delay, why,
            )  # fmt: skip
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _complete(
        self,
        client: openai.AsyncOpenAI,
        limiter: RateLimiter,
        semaphore: asyncio.Semaphore,
        request: InstructRequest,
    ) -> InstructRecord:
        started = time.monotonic()
        prompt_tokens = completion_tokens = 0
        model = self.model_name

        def book(used_model: str, prompt: int, completion: int) -> None:
            # The spend is booked by _call when the reply arrives; the record sums usage.
            nonlocal prompt_tokens, completion_tokens
            prompt_tokens += prompt
            completion_tokens += completion

        try:
            reply, finish, model, prompt, completion = await self._call(
                client, limiter, semaphore, request, request.messages
            )
            book(model, prompt, completion)
            # A reply cut by max_tokens is kept as is: the parser rescues its complete samples,
            # and asking again would most likely be cut again.
            if self.corrective_retry and finish != "length" and not parse_reply(reply).items:
                log.info("request %s: reply holds no samples; asking once more", request.id)
                follow_up = [
                    *request.messages,
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": CORRECTIVE_MESSAGE},
                ]
                try:
                    second = await self._call(
                        client, limiter, semaphore, request, follow_up, "corrective"
                    )
                except (_Retryable, openai.APIStatusError) as error:
                    # The first reply stands; the parse stage drops it with its reason.
                    log.info("request %s: corrective retry failed (%s)", request.id, error)
                else:
                    reply, finish, model, prompt, completion = second
                    book(model, prompt, completion)
        except _Retryable as error:
            if error.reason.startswith("endpoint unreachable"):
                # Every retry failed to even connect: the endpoint is down, not this request.
                # Writing failed records for the rest of the stage would lose them; stop
                # instead, keeping what was written, so a rerun sends only what is missing.
                raise InstructorError(
                    f"lost the {self.role} endpoint {self.base_url} ({error.reason})",
                    hint="records written so far are kept; rerun the same command to resume",
                ) from None
            return failed_record(
                request, self.model_name, f"{error.reason} (after {self.max_retries} retries)",
                time.monotonic() - started,
            )  # fmt: skip
        except openai.APIStatusError as error:
            return failed_record(
                request, self.model_name, f"HTTP {error.status_code}: {str(error)[:300]}",
                time.monotonic() - started,
            )  # fmt: skip
        record = record_for(
            request, status="ok", reply=reply, finish_reason=finish, model=model,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            seconds=time.monotonic() - started,
        )  # fmt: skip
        if self.cache is not None:
            self.cache.put(self.cache_key(request), dataclasses.asdict(record))
        return record

    def _cached(self, request: InstructRequest) -> InstructRecord | None:
        if self.cache is None:
            return None
        stored = self.cache.get(self.cache_key(request))
        if stored is None:
            return None
        outcome = {
            k: v for k, v in stored.items()
            if k not in _REQUEST_FIELDS and k in InstructRecord.__dataclass_fields__
        }  # fmt: skip
        return record_for(request, **outcome)

    # -- the stage -------------------------------------------------------------------------

    def _upper_cost(self, request: InstructRequest) -> float:
        """What one request may cost at most: its call at max_tokens of completion, and
        the corrective retry's (the first reply and the corrective message added)."""
        prompt = estimate_tokens(request.messages, 0)
        completion = self._max_tokens(request)
        upper = cost_of(self.ledger.prices, self.model_name, prompt, completion)
        if self.corrective_retry:
            upper += cost_of(self.ledger.prices, self.model_name, prompt + completion + 64, completion)
        return upper

    def _refile(self) -> None:
        """Replies booked in the spend log but missing from the cache (a kill fell between
        the two writes) go into the cache, so they are not paid for again."""
        if self.cache is None:
            return
        for key, call in self.ledger.unfiled():
            if self.cache.get_call(key) is None:
                self.cache.put_call(key, call)

    async def run(
        self,
        requests: Iterable[InstructRequest],
        on_record: Callable[[InstructRecord], None],
        *,
        max_cost: float | None = None,
    ) -> None:
        """Process all requests concurrently; ``on_record`` gets each record as it finishes.

        ``requests`` is consumed lazily: at most a few times ``concurrency`` requests are
        in progress (and in memory) at once, however many there are.

        With ``max_cost``, no request starts once the money spent (all of the run's spend
        log, earlier processes included) plus the worst case of the requests in flight
        would pass it; the ones in flight finish and are handed to ``on_record``, then
        :class:`BudgetExceeded` is raised (a rerun with a larger budget resumes, and the
        cache makes it free to repeat what was done).
        """
        skipped_for_budget = 0  # requests never started: the BudgetExceeded message says how many
        limiter = RateLimiter(self.rpm, self.tpm, burst_s=self.burst_s)
        semaphore = asyncio.Semaphore(self.concurrency)
        # A bounded number of requests is in progress (on the wire or backing off), so the
        # budget check below reserves for a few requests at a time, not for all of them at
        # once; twice the wire slots, so requests backing off do not idle the wire.
        slots = asyncio.Semaphore(2 * self.concurrency)
        reserved = 0.0
        budget_hit = False
        self._refile()

        async def one(request: InstructRequest) -> None:
            nonlocal reserved, budget_hit, skipped_for_budget
            try:
                cached = self._cached(request)
                if cached is not None:
                    on_record(cached)
                    return
                upper = self._upper_cost(request)
                if budget_hit or (
                    max_cost is not None and self.ledger.cost() + reserved + upper > max_cost
                ):
                    budget_hit = True
                    skipped_for_budget += 1
                    return
                reserved += upper
                try:
                    record = await self._complete(client, limiter, semaphore, request)
                finally:
                    reserved -= upper
                if record.status != "ok":
                    log.warning("request %s failed: %s", request.id, record.error)
                on_record(record)
            finally:
                slots.release()

        client = self._new_client()
        try:
            async with asyncio.TaskGroup() as group:
                for request in requests:
                    if budget_hit:  # count what is left, start nothing
                        skipped_for_budget += 1
                        continue
                    await slots.acquire()
                    group.create_task(one(request))
        except BaseExceptionGroup as errors:
            # TaskGroup wraps what a request raised; hand the caller the first error itself.
            raise _first_leaf(errors) from None
        finally:
            await client.close()
            self.ledger.save()
        if budget_hit:
            raise BudgetExceeded(
                f"max_cost {max_cost} reached (spent {self.ledger.cost():.4f}); "
                f"{skipped_for_budget} requests not sent",
                hint="records written so far are kept; rerun with a higher --max-cost to resume",
            )

    def run_all(
        self,
        requests: Iterable[InstructRequest],
        on_record: Callable[[InstructRecord], None],
        *,
        max_cost: float | None = None,
    ) -> None:
        """Synchronous wrapper around :meth:`run` (must not be called inside an event loop)."""
        asyncio.run(self.run(requests, on_record, max_cost=max_cost))

    def complete(self, request: InstructRequest) -> InstructRecord:
        """One request, synchronously (the :class:`Instructor` protocol).

        Each call has its own event loop and limiter, so pacing across calls only comes from
        :meth:`run`; use that for a stage.
        """
        records: list[InstructRecord] = []
        self.run_all([request], records.append)
        return records[0]

    def _not_an_api(self, kind: str) -> InstructorError:
        """A 200 reply that is not JSON: a proxy, a captive portal or a web server at base_url."""
        kind = kind.split(";")[0] or "a non-JSON reply"
        return InstructorError(
            f"the {self.role} at {self.base_url} answered with {kind}, not the JSON of an OpenAI-compatible API",
            hint="point instructor.base_url at the API itself; it usually ends in /v1",
        )

    def check(self) -> None:
        async def probe() -> None:
            client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, timeout=15, max_retries=1
            )
            try:
                raw = await client.models.with_raw_response.list()
            finally:
                await client.close()
            if "json" not in raw.headers.get("content-type", "json"):
                raise self._not_an_api(raw.headers.get("content-type", ""))

        try:
            asyncio.run(probe())
        except openai.AuthenticationError:
            raise InstructorError(
                f"the {self.role} at {self.base_url} rejected the API key",
                hint="check instructor.api_key_env",
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as error:
            raise InstructorError(
                f"the {self.role} endpoint {self.base_url} is unreachable ({type(error).__name__})",
                hint="start the server, fix instructor.base_url, "
                "or set instructor.local.enabled: true",
            ) from None
        except openai.APIStatusError:
            pass  # some servers lack /models; the first real request will tell

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.ledger.close()
