"""A scripted target for fast tests (cf. lm-eval's DummyLM, llm's MockModel).

Replies come from a queue (``enqueue``) when one is set, otherwise from a deterministic
rule so a run through the CLI is reproducible: the answer is a number derived from a
hash of the prompt, which is occasionally right and usually wrong. ``history`` records
every prompt it was asked; ``prompt_log`` also appends a hash of each to a file, so a
test can count what worker processes answered.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from lai.targets.base import Prompt, Target


class ScriptedTarget(Target):
    def __init__(
        self,
        model: str,
        *,
        delay_s: float = 0.0,
        modulus: int = 7,
        prompt_log: str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(model)
        self.prompt_log = prompt_log  # a file that gets one line per prompt answered
        self.delay_s = float(delay_s)
        self.modulus = int(modulus)
        self.queue: list[str] = []
        self.history: list[Prompt] = []

    def enqueue(self, replies: list[str]) -> None:
        self.queue.extend(replies)

    def _rule(self, prompt: Prompt) -> str:
        digest = hashlib.sha256((self.name + repr(prompt)).encode()).digest()
        value = int.from_bytes(digest[:4], "big") % self.modulus
        return f"I think it through quickly.\nThe answer is {value}."

    def generate(self, prompts: list[Prompt], max_new_tokens: int, stop: Sequence[str] = ()) -> list[str]:
        replies = []
        for prompt in prompts:
            if self.delay_s:
                time.sleep(self.delay_s)
            self.history.append(prompt)
            replies.append(self.queue.pop(0) if self.queue else self._rule(prompt))
            if self.row_done is not None:
                self.row_done(1)
        if self.prompt_log:
            # One write per batch, appended: several processes (Ray workers) may share the file.
            with open(self.prompt_log, "a", encoding="utf-8") as handle:
                handle.write("".join(hashlib.sha256(repr(p).encode()).hexdigest()[:16] + "\n" for p in prompts))
        return replies

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """Deterministic pseudo log-likelihoods, so choice tasks run on the fake too."""
        return [
            -(int.from_bytes(hashlib.sha256((self.name + repr(c) + x).encode()).digest()[:4], "big") % 1000) / 100
            for c, x in pairs
        ]

    def fingerprint(self) -> str:
        return "scripted-" + hashlib.sha256(self.name.encode()).hexdigest()[:12]
