from __future__ import annotations

import json

from lai.instructor.reply_json import parse_reply

SAMPLE = {"question": "Tom has 3 apples and buys 2 more. How many?", "solution": "3 + 2 = 5", "answer": "5"}


def test_plain_json_with_diagnosis() -> None:
    parsed = parse_reply(json.dumps({"diagnosis": "adds wrong", "samples": [SAMPLE, SAMPLE]}))
    assert parsed.method == "json" and parsed.diagnosis == "adds wrong" and len(parsed.items) == 2


def test_fenced_json_with_chatter() -> None:
    reply = "Sure! Here you go:\n```json\n" + json.dumps({"samples": [SAMPLE]}) + "\n```\nGood luck."
    parsed = parse_reply(reply)
    assert parsed.items == [SAMPLE]


def test_truncated_reply_keeps_only_complete_samples() -> None:
    full = json.dumps({"diagnosis": "forgets units", "samples": [SAMPLE, SAMPLE, SAMPLE]})
    cut = full[: full.rindex('{"question"') + 30]  # the third sample is cut mid-way
    parsed = parse_reply(cut)
    assert parsed.method == "embedded-json"
    assert parsed.items == [SAMPLE, SAMPLE]
    assert parsed.diagnosis == "forgets units"


def test_free_text_blocks() -> None:
    reply = (
        "Question 1: A box holds 6 eggs. How many eggs are in 4 boxes?\n"
        "Solution: 6 * 4 = 24.\nAnswer: 24\n\n"
        "Question 2: Sam reads 10 pages a day for 3 days. How many pages?\n"
        "Solution: 10 * 3 = 30.\nFinal answer: 30\n"
    )
    parsed = parse_reply(reply)
    assert parsed.method == "free-text"
    assert [item["answer"] for item in parsed.items] == ["24", "30"]


def test_garbage_and_empty_give_reasons() -> None:
    assert parse_reply("").problem == "empty reply"
    garbage = parse_reply("## The student got it wrong and it took a bit of work.")
    assert not garbage.items and "no samples found" in garbage.problem
    assert not parse_reply('{"diagnosis": "x", "samples": "none"}').items
