"""Turning an instructor's reply into candidate training samples.

Instructors are asked for JSON, but replies arrive fenced in markdown, prefixed with
chatter, cut off by the token limit, or as plain prose. The parser tries, in order:
1. the whole reply (or its first fenced block) as JSON;
2. every complete JSON object inside the text (``raw_decode`` at each ``{``), which
   rescues the whole samples of a truncated reply;
3. "Question: ... Solution: ... Answer: ..." blocks in free text.
It never raises; an empty result comes with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_FREE_TEXT = re.compile(
    r"Question\s*\d*\s*[:.]\s*(?P<question>.+?)\s*"
    r"(?:Solution|Steps?)\s*[:.]\s*(?P<solution>.+?)\s*"
    r"(?:Final answer|Answer)\s*[:.]\s*(?P<answer>[^\n]+)",
    re.IGNORECASE | re.DOTALL,
)
SAMPLE_KEYS = {"question", "solution", "answer"}


@dataclass
class ParsedReply:
    items: list[dict[str, Any]] = field(default_factory=list)
    diagnosis: str = ""
    method: str = ""
    problem: str = ""  # why nothing was found, when items is empty


def _items_from(value: Any) -> tuple[list[dict[str, Any]], str]:
    if isinstance(value, dict):
        diagnosis = str(value.get("diagnosis") or "")
        samples = value.get("samples")
        if isinstance(samples, list):
            return [s for s in samples if isinstance(s, dict)], diagnosis
        if SAMPLE_KEYS & value.keys():
            return [value], diagnosis
        return [], diagnosis
    if isinstance(value, list):
        return [s for s in value if isinstance(s, dict)], ""
    return [], ""


def _embedded_objects(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found, position = [], 0
    while (start := text.find("{", position)) != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        found.append(value)
        position = end
    return found


def parse_reply(reply: str) -> ParsedReply:
    text = reply.strip()
    if not text:
        return ParsedReply(problem="empty reply")
    candidates = [text] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        items, diagnosis = _items_from(value)
        if items:
            return ParsedReply(items, diagnosis, "json")
    # Objects nested in a truncated {"samples": [...]: take the complete sample objects.
    items, diagnosis = [], ""
    for value in _embedded_objects(text):
        found, found_diagnosis = _items_from(value)
        items.extend(found)
        diagnosis = diagnosis or found_diagnosis
    match = re.search(r'"diagnosis"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    diagnosis = diagnosis or (match.group(1) if match else "")
    if items:
        return ParsedReply(items, diagnosis, "embedded-json")
    blocks = [m.groupdict() for m in _FREE_TEXT.finditer(text)]
    if blocks:
        return ParsedReply(blocks, diagnosis, "free-text")
    return ParsedReply(diagnosis=diagnosis, problem="no samples found in the reply (neither JSON nor Question/Answer blocks)")
